package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// DueExecution is a claimed execution with what is needed to build its COMMAND.
type DueExecution struct {
	ExecutionID    string
	CommandID      string
	AgentID        string
	Priority       Priority
	Attempts       int // including the attempt being dispatched
	Verb           string
	Args           JSON
	CreatedBy      string
	ExpiresAt      time.Time
	TimeoutSeconds int
	GatewayID      string // filled from the Router's answer
}

// Router maps the agents of claimed executions to the gateway holding their
// session. Agents missing from the answer are not reachable now.
type Router func(ctx context.Context, agentIDs []string) (map[string]string, error)

// ClaimDue claims up to limit due executions of online agents with FOR UPDATE
// SKIP LOCKED (highest priority first, FIFO within a priority), asks route where
// each agent lives, and marks the routable ones dispatched with an ack deadline,
// all in one transaction, so concurrent schedulers never claim one execution
// twice. It returns the dispatched executions (to publish after commit) and how
// many rows it claimed in all.
func (s *Store) ClaimDue(ctx context.Context, limit int, ackTimeout time.Duration, route Router) ([]DueExecution, int, error) {
	var out []DueExecution
	claimed := 0
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var due []DueExecution
		err := tx.Raw(`SELECT e.id AS execution_id, e.command_id, e.agent_id, e.priority, e.attempts + 1 AS attempts,
       c.verb, c.args, c.created_by, c.expires_at, c.timeout_seconds
FROM executions e
JOIN commands c ON c.id = e.command_id
JOIN agents a ON a.id = e.agent_id
WHERE e.status IN ('queued', 'retrying') AND e.next_attempt_at <= now() AND a.status = 'online'
ORDER BY e.priority DESC, e.created_at, e.id
LIMIT ?
FOR UPDATE OF e SKIP LOCKED`, limit).Scan(&due).Error
		if err != nil {
			return fmt.Errorf("claiming executions: %w", err)
		}
		claimed = len(due)
		if len(due) == 0 {
			return nil
		}
		agents := make([]string, 0, len(due))
		for _, d := range due {
			agents = append(agents, d.AgentID)
		}
		where, err := route(ctx, agents)
		if err != nil {
			return fmt.Errorf("routing executions: %w", err)
		}
		byGateway := map[string][]string{}
		for _, d := range due {
			gw, ok := where[d.AgentID]
			if !ok || gw == "" {
				continue
			}
			d.GatewayID = gw
			out = append(out, d)
			byGateway[gw] = append(byGateway[gw], d.ExecutionID)
		}
		now := time.Now().UTC()
		for gw, ids := range byGateway {
			err := tx.Model(&Execution{}).Where("id IN ?", ids).Updates(map[string]any{
				"status": ExecDispatched, "attempts": gorm.Expr("attempts + 1"), "gateway_id": gw,
				"dispatched_at": now, "ack_deadline": now.Add(ackTimeout), "updated_at": now,
			}).Error
			if err != nil {
				return fmt.Errorf("marking executions dispatched: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	if len(out) > 0 {
		ids := make([]string, 0, len(out))
		for _, d := range out {
			ids = append(ids, d.CommandID)
		}
		// Outside the claim transaction: result recording locks the command row
		// before the execution row, so taking them in the other order here could deadlock.
		err := s.db.WithContext(ctx).Model(&Command{}).Where("id IN ? AND status = ?", ids, CommandQueued).
			Updates(map[string]any{"status": CommandRunning, "updated_at": time.Now().UTC()}).Error
		if err != nil {
			return out, claimed, fmt.Errorf("marking commands running: %w", err)
		}
	}
	return out, claimed, nil
}

// ReleaseUndelivered puts a dispatched execution back in the queue at once when
// the gateway reports its agent gone before the COMMAND reached it; the attempt
// does not count. It reports whether the execution was released.
func (s *Store) ReleaseUndelivered(ctx context.Context, executionID string) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Execution{}).
		Where("id = ? AND status = ?", executionID, ExecDispatched).
		Updates(map[string]any{
			"status": ExecQueued, "attempts": gorm.Expr("greatest(attempts - 1, 0)"),
			"next_attempt_at": time.Now().UTC(), "ack_deadline": nil, "dispatched_at": nil, "updated_at": time.Now().UTC(),
		})
	if res.Error != nil {
		return false, fmt.Errorf("releasing undelivered execution: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// Timeout is an execution ended by a deadline; the agent should get a CANCEL.
type Timeout struct {
	ExecutionID string
	CommandID   string
	AgentID     string
	GatewayID   string
	Status      string
}

// Sweep applies deadlines at now: dispatched executions without ACK past their
// ack deadline go to retrying (after retryDelay × 2^(attempt−1)) or fail once
// retries are used up; executions running past the command timeout end
// timed_out; queued executions past the command TTL end expired. Affected
// commands get their aggregate status recomputed. It returns the executions that
// ended while an agent may still be running them.
func (s *Store) Sweep(ctx context.Context, now time.Time, retryDelay, maxRetryDelay time.Duration) ([]Timeout, error) {
	now = now.UTC()
	var ended []Timeout
	var touched []string
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []Timeout
		err := tx.Raw(`UPDATE executions e SET
    status = CASE WHEN e.attempts > c.max_retries THEN 'failed' ELSE 'retrying' END,
    error = CASE WHEN e.attempts > c.max_retries THEN 'no acknowledgement from agent after ' || e.attempts || ' attempts' ELSE e.error END,
    finished_at = CASE WHEN e.attempts > c.max_retries THEN ?::timestamptz ELSE NULL END,
    next_attempt_at = ?::timestamptz + least(?::bigint * power(2, greatest(e.attempts - 1, 0))::bigint, ?::bigint) * interval '1 millisecond',
    ack_deadline = NULL, updated_at = ?::timestamptz
FROM commands c
WHERE c.id = e.command_id AND e.status = 'dispatched' AND e.ack_deadline < ?::timestamptz
RETURNING e.id AS execution_id, e.command_id, e.agent_id, e.gateway_id, e.status`,
			now, now, retryDelay.Milliseconds(), maxRetryDelay.Milliseconds(), now, now).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("requeueing unacknowledged executions: %w", err)
		}
		for _, r := range rows {
			touched = append(touched, r.CommandID)
		}
		rows = nil
		err = tx.Raw(`UPDATE executions e SET status = 'timed_out', error = 'timed out after ' || c.timeout_seconds || 's',
    finished_at = ?::timestamptz, updated_at = ?::timestamptz
FROM commands c
WHERE c.id = e.command_id AND e.status IN ('dispatched', 'running')
  AND e.dispatched_at + c.timeout_seconds * interval '1 second' < ?::timestamptz
RETURNING e.id AS execution_id, e.command_id, e.agent_id, e.gateway_id, e.status`, now, now, now).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("timing out executions: %w", err)
		}
		ended = rows
		for _, r := range rows {
			touched = append(touched, r.CommandID)
		}
		rows = nil
		err = tx.Raw(`UPDATE executions e SET status = 'expired', error = 'command expired before the agent could run it',
    finished_at = ?::timestamptz, updated_at = ?::timestamptz
FROM commands c
WHERE c.id = e.command_id AND e.status IN ('queued', 'retrying') AND c.expires_at < ?::timestamptz
RETURNING e.id AS execution_id, e.command_id, e.agent_id, e.gateway_id, e.status`, now, now, now).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("expiring executions: %w", err)
		}
		for _, r := range rows {
			touched = append(touched, r.CommandID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ended, s.RefreshCommands(ctx, touched)
}

// RefreshCommands recomputes the aggregate status of the given commands, each in
// its own short transaction holding that command's lock.
func (s *Store) RefreshCommands(ctx context.Context, ids []string) error {
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := lockCommand(tx, id); err != nil {
				return err
			}
			return refreshCommand(tx, id)
		})
		if err != nil {
			return fmt.Errorf("refreshing command %s: %w", id, err)
		}
	}
	return nil
}
