package store

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"time"

	"gorm.io/gorm"

	"github.com/viworks/backend-agent/pkg/argseal"
)

// Leader is a leadership lease: on Postgres a session-level advisory lock held
// on a dedicated connection, released when the holder releases it or its
// connection dies (so a crashed holder hands over to another replica). On
// SQLite the one process is always the leader.
type Leader struct {
	conn *sql.Conn
	key  int64
}

func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("viworks-leader:" + name))
	return int64(h.Sum64() >> 1)
}

// TryLead tries to become the leader for name; it returns nil (and no error)
// while another holds it.
func (s *Store) TryLead(ctx context.Context, name string) (*Leader, error) {
	return s.dialect.tryLead(ctx, s.db, lockKey(name))
}

// Check verifies the lease is still held: a session-level lock lives exactly
// as long as its connection, so a live connection means a held lock.
func (l *Leader) Check(ctx context.Context) error {
	if l.conn == nil {
		return nil
	}
	if err := l.conn.PingContext(ctx); err != nil {
		return fmt.Errorf("leader connection lost: %w", err)
	}
	return nil
}

// Release gives the lease up.
func (l *Leader) Release(ctx context.Context) {
	if l.conn == nil {
		return
	}
	_, _ = l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, l.key)
	_ = l.conn.Close()
	l.conn = nil
}

// StaleAgent is an agent marked offline for missing its heartbeats.
type StaleAgent struct {
	ID        string
	GatewayID string
}

// MarkStaleAgentsOffline marks offline the online agents not seen since before
// cutoff (their gateway died without saying so) and returns them.
func (s *Store) MarkStaleAgentsOffline(ctx context.Context, cutoff time.Time) ([]StaleAgent, error) {
	var stale []StaleAgent
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&Agent{}).Select("id", "gateway_id").
			Where("status = ? AND last_seen_at < ?", AgentOnline, cutoff.UTC()).Limit(sweepBatch).Scan(&stale).Error; err != nil {
			return fmt.Errorf("finding stale agents: %w", err)
		}
		now := time.Now().UTC()
		for _, a := range stale {
			err := tx.Model(&Agent{}).Where("id = ? AND status = ? AND last_seen_at < ?", a.ID, AgentOnline, cutoff.UTC()).
				Updates(map[string]any{"status": AgentOffline, "updated_at": now}).Error
			if err != nil {
				return fmt.Errorf("marking stale agent offline: %w", err)
			}
		}
		return nil
	})
	return stale, err
}

// retentionBatch bounds each delete so no statement holds locks for long.
const retentionBatch = 5000

// DeleteTelemetryBefore deletes telemetry older than cutoff in batches, at most
// maxBatches of them per call; it returns how many rows went.
func (s *Store) DeleteTelemetryBefore(ctx context.Context, cutoff time.Time, maxBatches int) (int64, error) {
	row := s.dialect.rowID()
	q := `DELETE FROM telemetry WHERE ` + row + ` IN (SELECT ` + row + ` FROM telemetry WHERE ts < ? LIMIT ?)`
	return s.deleteBatches(ctx, maxBatches, "telemetry", func(db *gorm.DB) *gorm.DB { return db.Exec(q, cutoff.UTC(), retentionBatch) })
}

// DeleteCommandsFinishedBefore deletes commands (and, by cascade, their
// executions) that finished before cutoff, in batches.
func (s *Store) DeleteCommandsFinishedBefore(ctx context.Context, cutoff time.Time, maxBatches int) (int64, error) {
	q := `DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?)`
	return s.deleteBatches(ctx, maxBatches, "commands", func(db *gorm.DB) *gorm.DB { return db.Exec(q, cutoff.UTC(), retentionBatch/5) })
}

func (s *Store) deleteBatches(ctx context.Context, maxBatches int, what string, del func(*gorm.DB) *gorm.DB) (int64, error) {
	var total int64
	for range maxBatches {
		res := del(s.db.WithContext(ctx))
		if res.Error != nil {
			return total, fmt.Errorf("deleting old %s: %w", what, res.Error)
		}
		total += res.RowsAffected
		if res.RowsAffected == 0 {
			break
		}
	}
	return total, nil
}

// PurgeSealedArgs removes the encrypted secret values from the args of up to
// limit final commands (argseal.Purge: each envelope becomes a "purged"
// marker) and clears their args_sealed flag; it returns how many commands it
// purged. A command is final once finished_at is set: no execution of it is
// dispatched again, so its secrets are no longer needed.
func (s *Store) PurgeSealedArgs(ctx context.Context, limit int) (int, error) {
	var rows []struct {
		ID   string
		Args JSON
	}
	err := s.db.WithContext(ctx).Model(&Command{}).Select("id, args").
		Where("args_sealed AND finished_at IS NOT NULL").Order("finished_at").Limit(limit).Scan(&rows).Error
	if err != nil {
		return 0, fmt.Errorf("finding sealed args to purge: %w", err)
	}
	n := 0
	for _, r := range rows {
		purged, _, err := argseal.Purge(r.Args)
		if err != nil {
			// Args the API stored are JSON; should they not be, drop them whole.
			purged = JSON(`{}`)
		}
		res := s.db.WithContext(ctx).Model(&Command{}).Where("id = ? AND args_sealed", r.ID).
			Updates(map[string]any{"args": JSON(purged), "args_sealed": false})
		if res.Error != nil {
			return n, fmt.Errorf("purging sealed args: %w", res.Error)
		}
		n += int(res.RowsAffected)
	}
	return n, nil
}
