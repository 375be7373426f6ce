package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// AgentSession describes an agent that has just completed its HELLO.
type AgentSession struct {
	ID           string
	Site         string
	Version      string
	Hostname     string
	OS           string
	Arch         string
	Capabilities []string
	Labels       map[string]string
	GatewayID    string
	SessionID    string
	At           time.Time
}

// MarkAgentOnline registers (or updates) an agent as online on a gateway session.
func (s *Store) MarkAgentOnline(ctx context.Context, a AgentSession) error {
	return s.MarkAgentsOnline(ctx, []AgentSession{a})
}

// MarkAgentOffline marks the agent offline if sessionID is still its current
// session (a newer session elsewhere must not be overwritten). It reports whether
// the agent was marked.
func (s *Store) MarkAgentOffline(ctx context.Context, agentID, sessionID string, at time.Time) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Agent{}).
		Where("id = ? AND session_id = ?", agentID, sessionID).
		Updates(map[string]any{"status": AgentOffline, "last_seen_at": at.UTC(), "updated_at": at.UTC()})
	if res.Error != nil {
		return false, fmt.Errorf("marking agent offline: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// MarkGatewayAgentsOffline marks every agent still recorded on gatewayID offline
// (a gateway shutting down or found dead). It returns how many were marked.
func (s *Store) MarkGatewayAgentsOffline(ctx context.Context, gatewayID string, at time.Time) (int64, error) {
	res := s.db.WithContext(ctx).Model(&Agent{}).
		Where("gateway_id = ? AND status = ?", gatewayID, AgentOnline).
		Updates(map[string]any{"status": AgentOffline, "updated_at": at.UTC()})
	if res.Error != nil {
		return 0, fmt.Errorf("marking gateway agents offline: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// HealthUpdate is the latest heartbeat of one agent.
type HealthUpdate struct {
	AgentID string
	Status  string
	UptimeS int64
	At      time.Time
}

// TouchAgents writes a batch of heartbeats: last_seen_at, health and uptime.
// Gateways call it periodically with the newest heartbeat per agent, so Postgres
// sees O(agents/flush) writes, not one per heartbeat.
func (s *Store) TouchAgents(ctx context.Context, ups []HealthUpdate) error {
	if len(ups) == 0 {
		return nil
	}
	const chunk = 1000
	for start := 0; start < len(ups); start += chunk {
		batch := ups[start:min(start+chunk, len(ups))]
		var err error
		if s.dialect == Postgres {
			err = s.touchAgentsValues(ctx, batch)
		} else {
			err = s.touchAgentsRows(ctx, batch)
		}
		if err != nil {
			return fmt.Errorf("touching agents: %w", err)
		}
	}
	return nil
}

// touchAgentsValues updates a batch in one statement (Postgres).
func (s *Store) touchAgentsValues(ctx context.Context, ups []HealthUpdate) error {
	var sb strings.Builder
	args := make([]any, 0, len(ups)*4+1)
	sb.WriteString(`UPDATE agents AS a SET last_seen_at = v.at, health_status = v.status, uptime_s = v.uptime, updated_at = ?
FROM (VALUES `)
	args = append(args, time.Now().UTC())
	for i, u := range ups {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString("(?::text, ?::text, ?::bigint, ?::timestamptz)")
		args = append(args, u.AgentID, u.Status, u.UptimeS, u.At.UTC())
	}
	sb.WriteString(`) AS v(id, status, uptime, at) WHERE a.id = v.id`)
	return s.db.WithContext(ctx).Exec(sb.String(), args...).Error
}

// touchAgentsRows updates a batch row by row in one transaction (SQLite, where
// one local writer makes that cheap).
func (s *Store) touchAgentsRows(ctx context.Context, ups []HealthUpdate) error {
	now := time.Now().UTC()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, u := range ups {
			err := tx.Model(&Agent{}).Where("id = ?", u.AgentID).Updates(map[string]any{
				"last_seen_at": u.At.UTC(), "health_status": u.Status, "uptime_s": u.UptimeS, "updated_at": now,
			}).Error
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// AgentFilter selects agents to list; every set field must match.
type AgentFilter struct {
	Status     string
	Site       string
	Labels     map[string]string // every label must be present with this value
	Capability string
	IDPrefix   string // ids starting with this
	Limit      int
	After      string // cursor: list ids greater than this
}

// ListAgents returns agents ordered by id, at most f.Limit.
func (s *Store) ListAgents(ctx context.Context, f AgentFilter) ([]Agent, error) {
	q := s.db.WithContext(ctx).Model(&Agent{}).Order("id").Limit(f.Limit)
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.After != "" {
		q = q.Where("id > ?", f.After)
	}
	q = s.agentAttributes(q, f)
	var out []Agent
	if err := q.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	return out, nil
}

// GetAgent returns one agent or ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	res := s.db.WithContext(ctx).Where("id = ?", id).Limit(1).Find(&a)
	if res.Error != nil {
		return a, fmt.Errorf("getting agent: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return a, ErrNotFound
	}
	return a, nil
}
