package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// UnknownAgentsError lists targets that are not registered agents.
type UnknownAgentsError struct{ IDs []string }

func (e *UnknownAgentsError) Error() string {
	return "unknown agents: " + strings.Join(e.IDs, ", ")
}

// IncapableAgentsError lists chosen agents that do not announce the verb.
type IncapableAgentsError struct {
	Verb string
	IDs  []string
}

func (e *IncapableAgentsError) Error() string {
	return fmt.Sprintf("agents without capability %q: %s", e.Verb, strings.Join(e.IDs, ", "))
}

// Errors of CreateCommand.
var (
	ErrNoMatchingAgents = errors.New("no registered agent matches the targets")
	ErrNoOnlineAgent    = errors.New("no matching agent is online; mode any needs one")
	ErrQueueFull        = errors.New("the command queue is full")
	ErrCommandFinal     = errors.New("the command has already finished")
)

// NewCommand is what CreateCommand needs to enqueue a command.
type NewCommand struct {
	Verb           string
	Args           JSON
	ArgsSealed     bool // Args hold argseal envelopes, to purge once the command is final
	Priority       Priority
	CreatedBy      string
	TimeoutSeconds int
	MaxRetries     int
	TTLSeconds     int
	Mode           string // ModeAll (default) or ModeAny
	Targeting      Targeting
	MaxConcurrency int        // executions of this command in flight at once; 0: unlimited
	MaxErrors      *int       // failures tolerated before the rest is cancelled; nil: unlimited
	MaxQueued      int        // bound on queued executions system-wide; 0: unbounded
	Audit          AuditEvent // written in the same transaction; Target is set to the command id
	ScheduleID     string     // a schedule's run (FireSchedules); "" for others
	DueAt          time.Time  // that run's due time
}

// CreateCommand resolves the targets (explicit ids and/or a selector, every
// chosen agent registered and announcing the verb; for mode any the online one
// with the least work), then writes the command, one queued execution per
// chosen agent and the audit record in one transaction.
func (s *Store) CreateCommand(ctx context.Context, nc NewCommand) (Command, []Execution, error) {
	now := time.Now().UTC()
	cmd, err := commandRow(nc, now)
	if err != nil {
		return Command{}, nil, err
	}
	var execs []Execution
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		execs, err = s.createCommandTx(tx, &cmd, nc, now)
		return err
	})
	if err != nil {
		return Command{}, nil, err
	}
	return cmd, execs, nil
}

// commandRow is the new command nc describes, created at now.
func commandRow(nc NewCommand, now time.Time) (Command, error) {
	if nc.Mode == "" {
		nc.Mode = ModeAll
	}
	targeting, err := json.Marshal(nc.Targeting)
	if err != nil {
		return Command{}, fmt.Errorf("encoding targeting: %w", err)
	}
	cmd := Command{
		ID: uuid.NewString(), Verb: nc.Verb, Args: nc.Args, ArgsSealed: nc.ArgsSealed, Priority: nc.Priority, Status: CommandQueued,
		CreatedBy: nc.CreatedBy, TimeoutSeconds: nc.TimeoutSeconds, MaxRetries: nc.MaxRetries,
		TTLSeconds: nc.TTLSeconds, Mode: nc.Mode, Targeting: targeting, MaxConcurrency: nc.MaxConcurrency,
		MaxErrors: nc.MaxErrors, ExpiresAt: now.Add(time.Duration(nc.TTLSeconds) * time.Second),
		CreatedAt: now, UpdatedAt: now,
	}
	if len(cmd.Args) == 0 {
		cmd.Args = JSON("{}")
	}
	if nc.ScheduleID != "" {
		id, due := nc.ScheduleID, nc.DueAt.UTC()
		cmd.ScheduleID, cmd.DueAt = &id, &due
	}
	return cmd, nil
}

// errRunExists: the (schedule, due time) of a run has its command already.
var errRunExists = errors.New("the schedule's run exists already")

// createCommandTx resolves the targets and writes cmd, its executions and its
// audit record in tx: the one create path of POST /api/v1/commands and of
// schedules' runs. A run whose (schedule, due time) has a command already
// gives errRunExists and writes nothing.
func (s *Store) createCommandTx(tx *gorm.DB, cmd *Command, nc NewCommand, now time.Time) ([]Execution, error) {
	agents, err := resolveTargets(tx, nc.Verb, nc.Targeting)
	if err != nil {
		return nil, err
	}
	if cmd.Mode == ModeAny {
		pick, err := leastLoaded(tx, agents, "")
		if err != nil {
			return nil, err
		}
		agents = []string{pick}
	}
	if nc.MaxQueued > 0 {
		var queued int64
		if err := tx.Model(&Execution{}).Where("status IN ?", []string{ExecQueued, ExecRetrying}).Count(&queued).Error; err != nil {
			return nil, fmt.Errorf("counting queued executions: %w", err)
		}
		if int(queued)+len(agents) > nc.MaxQueued {
			return nil, ErrQueueFull
		}
	}
	execs := make([]Execution, len(agents))
	batch := newExecutions{CommandID: cmd.ID, Priority: nc.Priority, At: now, IDs: make([]string, len(agents)), AgentIDs: agents}
	for i, id := range agents {
		batch.IDs[i] = uuid.NewString()
		execs[i] = Execution{
			ID: batch.IDs[i], CommandID: cmd.ID, AgentID: id, Status: ExecQueued, Priority: nc.Priority,
			NextAttemptAt: now, CreatedAt: now, UpdatedAt: now,
		}
	}
	q := tx
	if cmd.ScheduleID != nil {
		// The unique (schedule_id, due_at): a due time fires once, whoever else
		// got there first.
		q = tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "schedule_id"}, {Name: "due_at"}}, DoNothing: true})
	}
	res := q.Create(cmd)
	if res.Error != nil {
		return nil, fmt.Errorf("inserting command: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return nil, errRunExists
	}
	if err := s.dialect.insertExecutions(tx, batch); err != nil {
		return nil, fmt.Errorf("inserting executions: %w", err)
	}
	return execs, s.insertAudit(tx, nc.Audit, cmd.ID, now)
}

// newExecutions are the queued executions of a new command, one per agent,
// due at once: IDs[i] is AgentIDs[i]'s.
type newExecutions struct {
	CommandID string
	Priority  Priority
	At        time.Time // next_attempt_at, created_at and updated_at
	IDs       []string
	AgentIDs  []string
}

// MatchTargets returns the registered agents t chooses (sorted by id), as
// CreateCommand resolves them but without the verb check and without writing
// anything: the preview of a command's targets. An explicit id that is not
// registered is an *UnknownAgentsError; no match is an empty list.
func (s *Store) MatchTargets(ctx context.Context, t Targeting) ([]Agent, error) {
	chosen, err := chooseAgents(s.db.WithContext(ctx), t)
	if err != nil {
		return nil, err
	}
	out := make([]Agent, 0, len(chosen))
	for _, a := range chosen {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// targetColumns are the agent columns targeting reads.
var targetColumns = []string{"id", "status", "site", "hostname", "last_seen_at", "capabilities", "labels"}

// chooseAgents returns the agents chosen by t by id: the explicit ids (each
// must be registered) plus the selector's matches.
func chooseAgents(tx *gorm.DB, t Targeting) (map[string]Agent, error) {
	chosen := map[string]Agent{}
	if len(t.AgentIDs) > 0 {
		var rows []Agent
		if err := tx.Select(targetColumns).Where("id IN ?", t.AgentIDs).Find(&rows).Error; err != nil {
			return nil, fmt.Errorf("checking targets: %w", err)
		}
		for _, a := range rows {
			chosen[a.ID] = a
		}
		if len(chosen) != len(dedupe(t.AgentIDs)) {
			have := make([]string, 0, len(chosen))
			for id := range chosen {
				have = append(have, id)
			}
			return nil, &UnknownAgentsError{IDs: missing(t.AgentIDs, have)}
		}
	}
	if !t.Selector.Empty() {
		matches, err := selectAgents(tx, *t.Selector)
		if err != nil {
			return nil, err
		}
		for _, a := range matches {
			chosen[a.ID] = a
		}
	}
	return chosen, nil
}

// resolveTargets returns the ids (sorted) of the agents chosen by t (see
// chooseAgents). Every chosen agent must announce verb among its capabilities.
func resolveTargets(tx *gorm.DB, verb string, t Targeting) ([]string, error) {
	chosen, err := chooseAgents(tx, t)
	if err != nil {
		return nil, err
	}
	if len(chosen) == 0 {
		return nil, ErrNoMatchingAgents
	}
	ids := make([]string, 0, len(chosen))
	var incapable []string
	for id, a := range chosen {
		ids = append(ids, id)
		if !slices.Contains([]string(a.Capabilities), verb) {
			incapable = append(incapable, id)
		}
	}
	if len(incapable) > 0 {
		sort.Strings(incapable)
		return nil, &IncapableAgentsError{Verb: verb, IDs: incapable}
	}
	sort.Strings(ids)
	return ids, nil
}

// selectAgents returns the registered agents matching sel: site in SQL, labels
// and capability in Go (portable across Postgres and SQLite).
func selectAgents(tx *gorm.DB, sel Selector) ([]Agent, error) {
	q := tx.Select(targetColumns)
	if sel.Site != "" {
		q = q.Where("site = ?", sel.Site)
	}
	var rows []Agent
	if err := q.Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("selecting agents: %w", err)
	}
	out := rows[:0]
	for _, a := range rows {
		if sel.Capability != "" && !slices.Contains([]string(a.Capabilities), sel.Capability) {
			continue
		}
		ok := true
		for k, v := range sel.Labels {
			if a.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// leastLoaded picks, among ids, the online agent with the fewest executions in
// flight (ties by id), other than exclude.
func leastLoaded(tx *gorm.DB, ids []string, exclude string) (string, error) {
	var online []string
	q := tx.Model(&Agent{}).Where("id IN ? AND status = ?", ids, AgentOnline)
	if exclude != "" {
		q = q.Where("id <> ?", exclude)
	}
	if err := q.Order("id").Pluck("id", &online).Error; err != nil {
		return "", fmt.Errorf("finding online agents: %w", err)
	}
	if len(online) == 0 {
		return "", ErrNoOnlineAgent
	}
	type load struct {
		AgentID string
		N       int
	}
	var loads []load
	err := tx.Model(&Execution{}).Select("agent_id, count(*) AS n").
		Where("agent_id IN ? AND status IN ?", online, []string{ExecDispatched, ExecRunning}).
		Group("agent_id").Scan(&loads).Error
	if err != nil {
		return "", fmt.Errorf("counting agent load: %w", err)
	}
	busy := map[string]int{}
	for _, l := range loads {
		busy[l.AgentID] = l.N
	}
	best := online[0]
	for _, id := range online[1:] {
		if busy[id] < busy[best] {
			best = id
		}
	}
	return best, nil
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func missing(want, have []string) []string {
	set := make(map[string]bool, len(have))
	for _, h := range have {
		set[h] = true
	}
	var out []string
	for _, w := range want {
		if !set[w] {
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// GetCommand returns a command and its executions, or ErrNotFound.
func (s *Store) GetCommand(ctx context.Context, id string) (Command, []Execution, error) {
	var cmd Command
	res := s.db.WithContext(ctx).Where("id = ?", id).Limit(1).Find(&cmd)
	if res.Error != nil {
		return cmd, nil, fmt.Errorf("getting command: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return cmd, nil, ErrNotFound
	}
	var execs []Execution
	if err := s.db.WithContext(ctx).Where("command_id = ?", id).Order("agent_id").Find(&execs).Error; err != nil {
		return cmd, nil, fmt.Errorf("getting executions: %w", err)
	}
	return cmd, execs, nil
}

// AckExecution moves a dispatched execution of agentID to running (see RecordBatch).
func (s *Store) AckExecution(ctx context.Context, executionID, agentID string, at time.Time) (bool, error) {
	out, err := s.RecordBatch(ctx, Batch{Acks: []Ack{{ExecutionID: executionID, AgentID: agentID, At: at}}})
	if err != nil {
		return false, err
	}
	return out.Acked[0], nil
}

// RecordResult records one result (see RecordBatch) and returns the command id
// and whether this result was recorded.
func (s *Store) RecordResult(ctx context.Context, r Result) (commandID string, recorded bool, err error) {
	out, err := s.RecordBatch(ctx, Batch{Results: []Result{r}})
	if err != nil {
		return "", false, err
	}
	return out.Results[0].CommandID, out.Results[0].Recorded, nil
}

// lockedCommand is what refreshCommand needs of a locked command.
type lockedCommand struct {
	ID         string
	Status     string
	MaxErrors  *int
	FinishedAt *time.Time
}

// lockCommand takes the command's row lock (Postgres) and reads it; SQLite's
// single writer already serialises the transaction, and its dialect drops the
// locking clause. A missing command gives ErrNotFound.
func lockCommand(tx *gorm.DB, id string) (lockedCommand, error) {
	var c lockedCommand
	res := tx.Model(&Command{}).Clauses(clause.Locking{Strength: "UPDATE"}).
		Select("id", "status", "max_errors", "finished_at").Where("id = ?", id).Limit(1).Scan(&c)
	if res.Error != nil {
		return c, fmt.Errorf("locking command: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return c, ErrNotFound
	}
	return c, nil
}

// refreshCommand recomputes a locked command's aggregate status from its
// executions, first cancelling what is still queued once failures exceed
// max_errors; it writes the command only when the status changes.
func refreshCommand(tx *gorm.DB, cmd lockedCommand, changes *[]CommandChange) error {
	id := cmd.ID
	counts, err := countByStatus(tx, id)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	if cmd.MaxErrors != nil && counts[ExecFailed]+counts[ExecTimedOut] > *cmd.MaxErrors && counts[ExecQueued]+counts[ExecRetrying] > 0 {
		err := tx.Model(&Execution{}).Where("command_id = ? AND status IN ?", id, []string{ExecQueued, ExecRetrying}).
			Updates(map[string]any{
				"status": ExecCancelled, "finished_at": now, "updated_at": now,
				"error": fmt.Sprintf("cancelled: more than %d executions failed (max_errors)", *cmd.MaxErrors),
			}).Error
		if err != nil {
			return fmt.Errorf("cancelling after max_errors: %w", err)
		}
		if counts, err = countByStatus(tx, id); err != nil {
			return err
		}
	}
	status, final := Aggregate(counts)
	if status == cmd.Status && (!final || cmd.FinishedAt != nil) {
		return nil
	}
	upd := map[string]any{"status": status, "updated_at": now}
	if final {
		upd["finished_at"] = gorm.Expr("coalesce(finished_at, ?)", now)
	}
	if err := tx.Model(&Command{}).Where("id = ?", id).Updates(upd).Error; err != nil {
		return fmt.Errorf("updating command status: %w", err)
	}
	if status != cmd.Status {
		*changes = append(*changes, CommandChange{CommandID: id, Status: status})
	}
	return nil
}

// openExecution is the condition on an execution (alias e) that has not
// finished. It is literal SQL, the predicate of the partial index
// executions_open_idx, so that the planner may use that index for any plan.
const openExecution = `e.status IN ('queued', 'dispatched', 'running', 'retrying')`

// hasOpenExecutions reports whether any execution of the command has not finished.
func hasOpenExecutions(tx *gorm.DB, commandID string) (bool, error) {
	var open bool
	err := tx.Raw(`SELECT EXISTS (SELECT 1 FROM executions e WHERE e.command_id = ? AND `+openExecution+`)`, commandID).Scan(&open).Error
	if err != nil {
		return false, fmt.Errorf("checking for open executions: %w", err)
	}
	return open, nil
}

func countByStatus(tx *gorm.DB, commandID string) (map[string]int, error) {
	type row struct {
		Status string
		N      int
	}
	var rows []row
	if err := tx.Model(&Execution{}).Select("status, count(*) AS n").Where("command_id = ?", commandID).Group("status").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("counting executions: %w", err)
	}
	counts := make(map[string]int, len(rows))
	for _, r := range rows {
		counts[r.Status] = r.N
	}
	return counts, nil
}

// CancelCommand cancels what has not finished: queued and retrying executions
// end cancelled; dispatched and running ones end cancelled too and are returned
// so their agents get a CANCEL. A finished command gives ErrCommandFinal.
func (s *Store) CancelCommand(ctx context.Context, id, actor, requestID string) ([]Timeout, error) {
	var running []Timeout
	var changes []CommandChange
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		running, err = s.cancelCommandTx(tx, id, actor, requestID, &changes)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.notify(ctx, changes)
	return running, nil
}

// cancelCommandTx is CancelCommand in tx (also a schedule's cancel_previous);
// its audit append comes last.
func (s *Store) cancelCommandTx(tx *gorm.DB, id, actor, requestID string, changes *[]CommandChange) ([]Timeout, error) {
	var running []Timeout
	cmd, err := lockCommand(tx, id)
	if err != nil {
		return nil, err
	}
	if cmd.FinishedAt != nil {
		return nil, ErrCommandFinal
	}
	if err := tx.Model(&Execution{}).Select("id AS execution_id", "command_id", "agent_id", "gateway_id", "status").
		Where("command_id = ? AND status IN ?", id, []string{ExecDispatched, ExecRunning}).Scan(&running).Error; err != nil {
		return nil, fmt.Errorf("finding running executions: %w", err)
	}
	now := time.Now().UTC()
	err = tx.Model(&Execution{}).Where("command_id = ? AND status IN ?", id, []string{ExecQueued, ExecRetrying, ExecDispatched, ExecRunning}).
		Updates(map[string]any{"status": ExecCancelled, "error": "cancelled by " + actor, "finished_at": now, "updated_at": now}).Error
	if err != nil {
		return nil, fmt.Errorf("cancelling executions: %w", err)
	}
	if err := tx.Model(&Command{}).Where("id = ?", id).Update("cancelled_by", actor).Error; err != nil {
		return nil, fmt.Errorf("recording who cancelled: %w", err)
	}
	if err := refreshCommand(tx, cmd, changes); err != nil {
		return nil, err
	}
	details, _ := json.Marshal(map[string]any{"running": len(running)})
	// Last: the audit append holds the chain lock until commit.
	return running, s.appendAudit(tx, AuditEvent{At: now, Actor: actor, Action: "command.cancel", Target: id, RequestID: requestID, Details: details})
}

// Aggregate derives a command's status from its executions' status counts and
// reports whether it is final.
func Aggregate(counts map[string]int) (string, bool) {
	total, terminal := 0, 0
	for st, n := range counts {
		total += n
		if IsTerminal(st) {
			terminal += n
		}
	}
	if total == 0 {
		return CommandQueued, false
	}
	if terminal < total {
		if counts[ExecQueued] == total {
			return CommandQueued, false
		}
		return CommandRunning, false
	}
	switch {
	case counts[ExecSucceeded] == total:
		return CommandSucceeded, true
	case counts[ExecSucceeded] > 0:
		return CommandPartiallySucceeded, true
	case counts[ExecCancelled] == total:
		return CommandCancelled, true
	case counts[ExecTimedOut] == total:
		return CommandTimedOut, true
	case counts[ExecExpired] == total:
		return CommandExpired, true
	}
	return CommandFailed, true
}

// ErrNoRoute is returned by a Router for an execution whose agent cannot be
// reached now; the execution stays queued.
var ErrNoRoute = errors.New("no route to agent")
