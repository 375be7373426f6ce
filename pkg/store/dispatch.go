package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"gorm.io/gorm"
)

// ClaimOptions bound a claim.
type ClaimOptions struct {
	Limit       int           // executions claimed per transaction (default 100)
	AckTimeout  time.Duration // dispatch to ACK (default 10s)
	MaxInFlight int           // dispatched+running across all schedulers; 0: unlimited
	PerAgent    int           // in flight per agent (default 16)
	Now         time.Time     // the claim's clock: what is due, dispatched_at, deadlines (default: the wall clock)
}

func (o *ClaimOptions) setDefaults() {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	if o.PerAgent <= 0 {
		o.PerAgent = 16
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	o.Now = o.Now.UTC()
}

// claimLockKey is the pg_advisory_xact_lock key that serialises capped claims.
const claimLockKey = 0x76697763 // "viwc"

var inFlight = []string{ExecDispatched, ExecRunning}

// withinCaps drops executions that would, within this batch, push an agent past
// perAgent or a command past its max_concurrency (the query checks the counts
// before the batch; this accounts for the batch itself).
func withinCaps(tx *gorm.DB, due []DueExecution, perAgent int) ([]DueExecution, error) {
	// The query checked each row against the counts before this batch; only an
	// agent or a capped command appearing twice in the batch can overshoot.
	agentSeen, commandSeen := map[string]int{}, map[string]int{}
	for _, d := range due {
		agentSeen[d.AgentID]++
		if d.MaxConcurrency > 0 {
			commandSeen[d.CommandID]++
		}
	}
	agentIDs, commandIDs := map[string]bool{}, map[string]bool{}
	for id, n := range agentSeen {
		if n > 1 {
			agentIDs[id] = true
		}
	}
	for id, n := range commandSeen {
		if n > 1 {
			commandIDs[id] = true
		}
	}
	if len(agentIDs) == 0 && len(commandIDs) == 0 {
		return due, nil
	}
	agentLoad, err := loadBy(tx, "agent_id", keys(agentIDs))
	if err != nil {
		return nil, err
	}
	commandLoad, err := loadBy(tx, "command_id", keys(commandIDs))
	if err != nil {
		return nil, err
	}
	out := due[:0]
	for _, d := range due {
		if (agentIDs[d.AgentID] && agentLoad[d.AgentID] >= perAgent) ||
			(commandIDs[d.CommandID] && commandLoad[d.CommandID] >= d.MaxConcurrency) {
			continue
		}
		agentLoad[d.AgentID]++
		commandLoad[d.CommandID]++
		out = append(out, d)
	}
	return out, nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// loadBy counts in-flight executions grouped by column (agent_id or command_id).
func loadBy(tx *gorm.DB, column string, ids []string) (map[string]int, error) {
	if len(ids) == 0 {
		return map[string]int{}, nil
	}
	type row struct {
		ID string
		N  int
	}
	var rows []row
	err := tx.Model(&Execution{}).Select(column+" AS id, count(*) AS n").
		Where(column+" IN ? AND status IN ?", ids, inFlight).Group(column).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("counting load by %s: %w", column, err)
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.ID] = r.N
	}
	return out, nil
}

// DueExecution is a claimed execution with what is needed to build its COMMAND.
type DueExecution struct {
	ExecutionID    string
	CommandID      string
	AgentID        string
	Priority       Priority
	Attempts       int // including the attempt being dispatched
	Verb           string
	Args           JSON
	ArgsSealed     bool // Args hold argseal envelopes, opened to build the COMMAND
	CreatedBy      string
	ExpiresAt      time.Time
	TimeoutSeconds int
	MaxConcurrency int
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
func (s *Store) ClaimDue(ctx context.Context, o ClaimOptions, route Router) ([]DueExecution, int, error) {
	o.setDefaults()
	var out []DueExecution
	claimed := 0
	lock := s.dialect.claimLock()
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		limit := o.Limit
		if o.MaxInFlight > 0 {
			if err := s.dialect.serialiseClaims(tx); err != nil {
				return err
			}
			var inflight int64
			if err := tx.Model(&Execution{}).Where("status IN ?", inFlight).Count(&inflight).Error; err != nil {
				return fmt.Errorf("counting executions in flight: %w", err)
			}
			limit = min(limit, o.MaxInFlight-int(inflight))
			if limit <= 0 {
				return nil
			}
		}
		var due []DueExecution
		err := tx.Raw(`SELECT e.id AS execution_id, e.command_id, e.agent_id, e.priority, e.attempts + 1 AS attempts,
       c.verb, c.args, c.args_sealed, c.created_by, c.expires_at, c.timeout_seconds, c.max_concurrency
FROM executions e
JOIN commands c ON c.id = e.command_id
JOIN agents a ON a.id = e.agent_id
LEFT JOIN (SELECT x.agent_id, count(*) AS n FROM executions x WHERE x.status IN ('dispatched', 'running')
           GROUP BY x.agent_id) al ON al.agent_id = e.agent_id
LEFT JOIN (SELECT y.command_id, count(*) AS n FROM executions y WHERE y.status IN ('dispatched', 'running')
             AND y.command_id IN (SELECT id FROM commands WHERE max_concurrency > 0 AND finished_at IS NULL)
           GROUP BY y.command_id) cl ON cl.command_id = e.command_id
WHERE e.status IN ('queued', 'retrying') AND e.next_attempt_at <= ? AND a.status = 'online'
  AND coalesce(al.n, 0) < ?
  AND (c.max_concurrency = 0 OR coalesce(cl.n, 0) < c.max_concurrency)
ORDER BY e.priority DESC, e.created_at, e.id
LIMIT ? `+lock, o.Now, o.PerAgent, limit).Scan(&due).Error
		if err != nil {
			return fmt.Errorf("claiming executions: %w", err)
		}
		claimed = len(due)
		if len(due) == 0 {
			return nil
		}
		due, err = withinCaps(tx, due, o.PerAgent)
		if err != nil {
			return err
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
		now := o.Now // the claim's clock, so deadlines agree with the sweeps
		for k, ids := range groups {
			err := tx.Model(&Execution{}).Where("id IN ?", ids).Updates(map[string]any{
				"status": ExecDispatched, "attempts": gorm.Expr("attempts + 1"), "gateway_id": k.gateway,
				"dispatched_at": now, "ack_deadline": now.Add(o.AckTimeout),
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
	return out, claimed, nil
}

// MarkCommandsRunning moves queued commands whose executions were dispatched to
// running. The scheduler calls it after publishing, off the critical path, and
// outside the claim transaction: result recording locks a command before its
// executions, so taking them in the other order there could deadlock.
func (s *Store) MarkCommandsRunning(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	var moved []string
	err := s.db.WithContext(ctx).Raw(`UPDATE commands SET status = ?, updated_at = ? WHERE id IN ? AND status = ? RETURNING id`,
		CommandRunning, time.Now().UTC(), dedupe(ids), CommandQueued).Scan(&moved).Error
	if err != nil {
		return fmt.Errorf("marking commands running: %w", err)
	}
	changes := make([]CommandChange, len(moved))
	for i, id := range moved {
		changes[i] = CommandChange{CommandID: id, Status: CommandRunning}
	}
	s.notify(ctx, changes)
	return nil
}

// ReleaseUndelivered puts a dispatched execution back in the queue at once when
// the gateway reports its agent gone before the COMMAND reached it; the attempt
// does not count. A mode-any execution moves to the next matching agent. It
// reports whether the execution was released.
func (s *Store) ReleaseUndelivered(ctx context.Context, executionID string) (bool, error) {
	released := false
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		rows, err := pending(tx, "e.id = ? AND e.status = 'dispatched'", executionID)
		if err != nil || len(rows) == 0 {
			return err
		}
		r := rows[0]
		now := time.Now().UTC()
		upd := map[string]any{
			"status": ExecQueued, "attempts": gorm.Expr("CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"),
			"next_attempt_at": now, "ack_deadline": nil, "deadline_at": nil, "dispatched_at": nil, "updated_at": now,
		}
		if r.Mode == ModeAny {
			if next, ok, err := failover(tx, r); err != nil {
				return err
			} else if ok {
				upd["agent_id"] = next
			}
		}
		res := tx.Model(&Execution{}).Where("id = ? AND status = ?", executionID, ExecDispatched).Updates(upd)
		if res.Error != nil {
			return fmt.Errorf("releasing undelivered execution: %w", res.Error)
		}
		released = res.RowsAffected > 0
		return nil
	})
	return released, err
}

// pendingRow is an execution with what deciding its next step needs.
type pendingRow struct {
	ExecutionID    string
	CommandID      string
	AgentID        string
	GatewayID      string
	Attempts       int
	MaxRetries     int
	TimeoutSeconds int
	Verb           string
	Mode           string
	Targeting      JSON
}

func pending(tx *gorm.DB, where string, args ...any) ([]pendingRow, error) {
	var rows []pendingRow
	err := tx.Raw(`SELECT e.id AS execution_id, e.command_id, e.agent_id, e.gateway_id, e.attempts,
       c.max_retries, c.timeout_seconds, c.verb, c.mode, c.targeting
FROM executions e JOIN commands c ON c.id = e.command_id
WHERE `+where+` LIMIT `+fmt.Sprint(sweepBatch), args...).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("finding executions: %w", err)
	}
	return rows, nil
}

// failover picks another online matching agent for a mode-any execution.
func failover(tx *gorm.DB, r pendingRow) (string, bool, error) {
	var t Targeting
	if err := json.Unmarshal(r.Targeting, &t); err != nil {
		return "", false, fmt.Errorf("decoding targeting of command %s: %w", r.CommandID, err)
	}
	candidates, err := resolveTargets(tx, r.Verb, t)
	if err != nil {
		return "", false, nil //nolint:nilerr // targets changed since creation: stay on the current agent
	}
	next, err := leastLoaded(tx, candidates, r.AgentID)
	if errors.Is(err, ErrNoOnlineAgent) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return next, true, nil
}

// retryOrFail ends an attempt that did not complete (no ACK, agent gone): the
// execution fails once its retries are used up; a mode-any one moves at once to
// another online matching agent; otherwise it waits in retrying for the policy's
// delay. Guarded by the statuses it may leave, so a result that landed wins.
func retryOrFail(tx *gorm.DB, r pendingRow, from []string, policy RetryPolicy, now time.Time, reason string) (bool, error) {
	upd := map[string]any{"ack_deadline": nil, "deadline_at": nil, "updated_at": now}
	var next string
	var moved bool
	if r.Mode == ModeAny && r.Attempts <= r.MaxRetries {
		var err error
		if next, moved, err = failover(tx, r); err != nil {
			return false, err
		}
	}
	switch {
	case r.Attempts > r.MaxRetries:
		upd["status"], upd["finished_at"] = ExecFailed, now
		upd["error"] = fmt.Sprintf("%s; gave up after %d attempts", reason, r.Attempts)
	case moved:
		upd["status"], upd["next_attempt_at"], upd["agent_id"] = ExecQueued, now, next
		upd["error"] = reason + "; moved to " + next
	default:
		upd["status"], upd["next_attempt_at"] = ExecRetrying, now.Add(policy.Delay(r.Attempts))
		upd["error"] = reason
	}
	res := tx.Model(&Execution{}).Where("id = ? AND agent_id = ? AND status IN ?", r.ExecutionID, r.AgentID, from).Updates(upd)
	if res.Error != nil {
		return false, fmt.Errorf("retrying execution: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// ReleaseAgentExecutions ends the attempts of an agent whose session on
// gatewayID closed while its executions were dispatched or running there (see
// retryOrFail). It returns the affected command ids.
func (s *Store) ReleaseAgentExecutions(ctx context.Context, agentID, gatewayID string, policy RetryPolicy) ([]string, error) {
	var touched []string
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		rows, err := pending(tx, "e.agent_id = ? AND e.gateway_id = ? AND e.status IN ('dispatched', 'running')", agentID, gatewayID)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		for _, r := range rows {
			ok, err := retryOrFail(tx, r, inFlight, policy, now, "agent disconnected before reporting a result")
			if err != nil {
				return err
			}
			if ok {
				touched = append(touched, r.CommandID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return touched, s.RefreshCommands(ctx, touched)
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
	return rand.N(ceil) //nolint:gosec // G404: retry jitter, not a secret
}

// sweepBatch bounds the rows one sweep pass touches per deadline kind.
const sweepBatch = 1000

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
		rows, err := pending(tx, "e.status = 'dispatched' AND e.ack_deadline < ?", now)
		if err != nil {
			return err
		}
		for _, r := range rows {
			ok, err := retryOrFail(tx, r, []string{ExecDispatched}, policy, now, "no acknowledgement from agent")
			if err != nil {
				return err
			}
			if ok {
				touched = append(touched, r.CommandID)
			}
		}

		rows, err = pending(tx, "e.status IN ('dispatched', 'running') AND e.deadline_at < ?", now)
		if err != nil {
			return err
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

		rows, err = pending(tx, "e.status IN ('queued', 'retrying') AND c.expires_at < ?", now)
		if err != nil {
			return err
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
	// Repair: an unfinished command left without open executions (a gateway
	// died between writing results and updating the aggregate) is refreshed.
	var orphaned []string
	err = s.db.WithContext(ctx).Raw(`SELECT c.id FROM commands c WHERE c.finished_at IS NULL
AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.command_id = c.id AND ` + openExecution + `)
ORDER BY c.created_at LIMIT 100`).Scan(&orphaned).Error
	if err != nil {
		return ended, fmt.Errorf("finding commands to repair: %w", err)
	}
	return ended, s.RefreshCommands(ctx, append(touched, orphaned...))
}

// RefreshCommands recomputes the aggregate status of the given commands, each in
// its own short transaction holding that command's lock.
func (s *Store) RefreshCommands(ctx context.Context, ids []string) error {
	seen := map[string]bool{}
	var changes []CommandChange
	defer func() { s.notify(ctx, changes) }()
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		var changed []CommandChange
		err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			cmd, err := lockCommand(tx, id)
			if err != nil {
				return err
			}
			return refreshCommand(tx, cmd, &changed)
		})
		if err != nil {
			return fmt.Errorf("refreshing command %s: %w", id, err)
		}
		changes = append(changes, changed...)
	}
	return nil
}
