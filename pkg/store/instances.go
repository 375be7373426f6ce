package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// Service roles recorded in service_instances.
const (
	RoleAPIServer = "api-server"
	RoleGateway   = "agent-gateway"
	RoleScheduler = "scheduler"
)

// ServiceInstance is the liveness record of one service process in one role:
// upserted every few seconds while it runs, deleted on a clean shutdown.
type ServiceInstance struct {
	Role       string `gorm:"primaryKey"`
	ID         string `gorm:"primaryKey"`
	Version    string `gorm:"not null"`
	Hostname   string `gorm:"not null"`
	Leader     bool   `gorm:"not null"`
	StartedAt  time.Time
	LastSeenAt time.Time
}

// UpsertServiceInstance records that an instance is alive at in.LastSeenAt.
func (s *Store) UpsertServiceInstance(ctx context.Context, in ServiceInstance) error {
	in.StartedAt, in.LastSeenAt = in.StartedAt.UTC(), in.LastSeenAt.UTC()
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "role"}, {Name: "id"}},
		DoUpdates: clause.AssignmentColumns([]string{"version", "hostname", "leader", "started_at", "last_seen_at"}),
	}).Create(&in).Error
	if err != nil {
		return fmt.Errorf("recording service instance: %w", err)
	}
	return nil
}

// DeleteServiceInstance removes an instance's record (clean shutdown).
func (s *Store) DeleteServiceInstance(ctx context.Context, role, id string) error {
	if err := s.db.WithContext(ctx).Where("role = ? AND id = ?", role, id).Delete(&ServiceInstance{}).Error; err != nil {
		return fmt.Errorf("deleting service instance: %w", err)
	}
	return nil
}

// maxInstances bounds the instances listed by ServiceInstancesSeen.
const maxInstances = 1000

// ServiceInstancesSeen lists the instances seen after since, by role and id
// (at most 1000).
func (s *Store) ServiceInstancesSeen(ctx context.Context, since time.Time) ([]ServiceInstance, error) {
	var out []ServiceInstance
	err := s.db.WithContext(ctx).Where("last_seen_at > ?", since.UTC()).
		Order("role").Order("id").Limit(maxInstances).Find(&out).Error
	if err != nil {
		return nil, fmt.Errorf("listing service instances: %w", err)
	}
	return out, nil
}

// DeleteServiceInstancesBefore removes records not refreshed since cutoff
// (processes that died without a clean shutdown).
func (s *Store) DeleteServiceInstancesBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	res := s.db.WithContext(ctx).Where("last_seen_at < ?", cutoff.UTC()).Delete(&ServiceInstance{})
	if res.Error != nil {
		return 0, fmt.Errorf("deleting stale service instances: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// OnlineAgentsByGateway counts the online agents per gateway id.
func (s *Store) OnlineAgentsByGateway(ctx context.Context) (map[string]int64, error) {
	var rows []struct {
		GatewayID string
		N         int64
	}
	err := s.db.WithContext(ctx).Model(&Agent{}).Select("gateway_id, count(*) AS n").
		Where("status = ?", AgentOnline).Group("gateway_id").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("counting agents per gateway: %w", err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.GatewayID] = r.N
	}
	return out, nil
}

// QueueDepth counts the executions waiting for dispatch (queued or retrying)
// per priority; it walks the partial index the claim query uses.
func (s *Store) QueueDepth(ctx context.Context) (map[Priority]int64, error) {
	var rows []struct {
		Priority Priority
		N        int64
	}
	err := s.db.WithContext(ctx).Model(&Execution{}).Select("priority, count(*) AS n").
		Where("status IN ?", []string{ExecQueued, ExecRetrying}).Group("priority").Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("counting queued executions: %w", err)
	}
	out := make(map[Priority]int64, len(rows))
	for _, r := range rows {
		out[r.Priority] = r.N
	}
	return out, nil
}
