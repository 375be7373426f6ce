package store

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	lock := "FOR UPDATE OF e SKIP LOCKED"
	if s.dialect == SQLite {
		lock = "" // the single writer connection serialises claims
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var due []DueExecution
		err := tx.Raw(`SELECT e.id AS execution_id, e.command_id, e.agent_id, e.priority, e.attempts + 1 AS attempts,
       c.verb, c.args, c.created_by, c.expires_at, c.timeout_seconds
FROM executions e
JOIN commands c ON c.id = e.command_id
JOIN agents a ON a.id = e.agent_id
WHERE e.status IN ('queued', 'retrying') AND e.next_attempt_at <= ? AND a.status = 'online'
ORDER BY e.priority DESC, e.created_at, e.id
LIMIT ? `+lock, time.Now().UTC(), limit).Scan(&due).Error
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
		type group struct {
			gateway string
			timeout int
		}
		groups := map[group][]string{}
		for _, d := range due {
			gw, ok := where[d.AgentID]
			if !ok || gw == "" {
				continue
			}
			d.GatewayID = gw
			out = append(out, d)
			k := group{gw, d.TimeoutSeconds}
			groups[k] = append(groups[k], d.ExecutionID)
		}
		now := time.Now().UTC()
		for k, ids := range groups {
			err := tx.Model(&Execution{}).Where("id IN ?", ids).Updates(map[string]any{
				"status": ExecDispatched, "attempts": gorm.Expr("attempts + 1"), "gateway_id": k.gateway,
				"dispatched_at": now, "ack_deadline": now.Add(ackTimeout),
				"deadline_at": now.Add(time.Duration(k.timeout) * time.Second), "updated_at": now,
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
	now := time.Now().UTC()
	res := s.db.WithContext(ctx).Model(&Execution{}).
		Where("id = ? AND status = ?", executionID, ExecDispatched).
		Updates(map[string]any{
			"status": ExecQueued, "attempts": gorm.Expr("CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"),
			"next_attempt_at": now, "ack_deadline": nil, "deadline_at": nil, "dispatched_at": nil, "updated_at": now,
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

// RetryPolicy spaces attempts: full jitter over Base × 2^(attempt−1), capped at Max.
type RetryPolicy struct {
	Base time.Duration
	Max  time.Duration
	// Jitter returns a value in [0, d); nil means math/rand/v2.
	Jitter func(d time.Duration) time.Duration
}

// Delay returns the wait before the attempt after attempt number n (n ≥ 1).
func (p RetryPolicy) Delay(n int) time.Duration {
	ceil := p.Max
	if n < 1 {
		n = 1
	}
	if n-1 < 62 {
		if d := p.Base << (n - 1); d > 0 && d < ceil {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	if p.Jitter != nil {
		return p.Jitter(ceil)
	}
	return rand.N(ceil)
}

// sweepBatch bounds the rows one sweep pass touches per deadline kind.
const sweepBatch = 1000

type sweepRow struct {
	ExecutionID    string
	CommandID      string
	AgentID        string
	GatewayID      string
	Attempts       int
	MaxRetries     int
	TimeoutSeconds int
}

// Sweep applies deadlines at now: dispatched executions without ACK past their
// ack deadline go to retrying (delay from policy) or fail once retries are used
// up; executions running past their deadline end timed_out; queued executions
// past the command TTL end expired. Every update is guarded by the status it
// read, so a result that lands meanwhile wins. Affected commands get their
// aggregate status recomputed. It returns the executions that ended while an
// agent may still be running them (to send CANCEL).
func (s *Store) Sweep(ctx context.Context, now time.Time, policy RetryPolicy) ([]Timeout, error) {
	now = now.UTC()
	var ended []Timeout
	var touched []string
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []sweepRow
		err := tx.Raw(`SELECT e.id AS execution_id, e.command_id, e.agent_id, e.gateway_id, e.attempts, c.max_retries
FROM executions e JOIN commands c ON c.id = e.command_id
WHERE e.status = 'dispatched' AND e.ack_deadline < ? LIMIT ?`, now, sweepBatch).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("finding unacknowledged executions: %w", err)
		}
		for _, r := range rows {
			upd := map[string]any{"ack_deadline": nil, "deadline_at": nil, "updated_at": now}
			if r.Attempts > r.MaxRetries {
				upd["status"], upd["finished_at"] = ExecFailed, now
				upd["error"] = fmt.Sprintf("no acknowledgement from agent after %d attempts", r.Attempts)
			} else {
				upd["status"], upd["next_attempt_at"] = ExecRetrying, now.Add(policy.Delay(r.Attempts))
			}
			res := tx.Model(&Execution{}).Where("id = ? AND status = ?", r.ExecutionID, ExecDispatched).Updates(upd)
			if res.Error != nil {
				return fmt.Errorf("retrying unacknowledged execution: %w", res.Error)
			}
			if res.RowsAffected > 0 {
				touched = append(touched, r.CommandID)
			}
		}

		rows = nil
		err = tx.Raw(`SELECT e.id AS execution_id, e.command_id, e.agent_id, e.gateway_id, e.attempts, c.timeout_seconds
FROM executions e JOIN commands c ON c.id = e.command_id
WHERE e.status IN ('dispatched', 'running') AND e.deadline_at < ? LIMIT ?`, now, sweepBatch).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("finding executions past their deadline: %w", err)
		}
		for _, r := range rows {
			res := tx.Model(&Execution{}).Where("id = ? AND status IN ?", r.ExecutionID, []string{ExecDispatched, ExecRunning}).
				Updates(map[string]any{
					"status": ExecTimedOut, "error": fmt.Sprintf("timed out after %ds", r.TimeoutSeconds),
					"finished_at": now, "updated_at": now,
				})
			if res.Error != nil {
				return fmt.Errorf("timing out execution: %w", res.Error)
			}
			if res.RowsAffected > 0 {
				touched = append(touched, r.CommandID)
				ended = append(ended, Timeout{ExecutionID: r.ExecutionID, CommandID: r.CommandID, AgentID: r.AgentID, GatewayID: r.GatewayID, Status: ExecTimedOut})
			}
		}

		rows = nil
		err = tx.Raw(`SELECT e.id AS execution_id, e.command_id, e.agent_id
FROM executions e JOIN commands c ON c.id = e.command_id
WHERE e.status IN ('queued', 'retrying') AND c.expires_at < ? LIMIT ?`, now, sweepBatch).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("finding expired executions: %w", err)
		}
		for _, r := range rows {
			res := tx.Model(&Execution{}).Where("id = ? AND status IN ?", r.ExecutionID, []string{ExecQueued, ExecRetrying}).
				Updates(map[string]any{
					"status": ExecExpired, "error": "command expired before the agent could run it",
					"finished_at": now, "updated_at": now,
				})
			if res.Error != nil {
				return fmt.Errorf("expiring execution: %w", res.Error)
			}
			if res.RowsAffected > 0 {
				touched = append(touched, r.CommandID)
			}
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
