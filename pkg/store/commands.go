package store

import (
	"context"
	"errors"
	"fmt"
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

// NewCommand is what CreateCommand needs to enqueue a command.
type NewCommand struct {
	Verb           string
	Args           JSON
	Priority       Priority
	CreatedBy      string
	TimeoutSeconds int
	MaxRetries     int
	TTLSeconds     int
	AgentIDs       []string
	Audit          AuditEvent // written in the same transaction; Target is set to the command id
}

// CreateCommand writes a command, one queued execution per target agent and the
// audit record in one transaction. Targets that are not registered agents fail the
// whole request with *UnknownAgentsError.
func (s *Store) CreateCommand(ctx context.Context, nc NewCommand) (Command, []Execution, error) {
	now := time.Now().UTC()
	cmd := Command{
		ID: uuid.NewString(), Verb: nc.Verb, Args: nc.Args, Priority: nc.Priority, Status: CommandQueued,
		CreatedBy: nc.CreatedBy, TimeoutSeconds: nc.TimeoutSeconds, MaxRetries: nc.MaxRetries,
		TTLSeconds: nc.TTLSeconds, ExpiresAt: now.Add(time.Duration(nc.TTLSeconds) * time.Second),
		CreatedAt: now, UpdatedAt: now,
	}
	if len(cmd.Args) == 0 {
		cmd.Args = JSON("{}")
	}
	execs := make([]Execution, len(nc.AgentIDs))
	for i, id := range nc.AgentIDs {
		execs[i] = Execution{
			ID: uuid.NewString(), CommandID: cmd.ID, AgentID: id, Status: ExecQueued, Priority: nc.Priority,
			NextAttemptAt: now, CreatedAt: now, UpdatedAt: now,
		}
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var known []string
		if err := tx.Model(&Agent{}).Where("id IN ?", nc.AgentIDs).Pluck("id", &known).Error; err != nil {
			return fmt.Errorf("checking targets: %w", err)
		}
		if len(known) != len(nc.AgentIDs) {
			return &UnknownAgentsError{IDs: missing(nc.AgentIDs, known)}
		}
		if err := tx.Create(&cmd).Error; err != nil {
			return fmt.Errorf("inserting command: %w", err)
		}
		if err := tx.CreateInBatches(execs, 1000).Error; err != nil {
			return fmt.Errorf("inserting executions: %w", err)
		}
		audit := nc.Audit
		audit.Target = cmd.ID
		if audit.At.IsZero() {
			audit.At = now
		}
		if len(audit.Details) == 0 {
			audit.Details = JSON("{}")
		}
		if err := tx.Create(&audit).Error; err != nil {
			return fmt.Errorf("inserting audit event: %w", err)
		}
		return nil
	})
	if err != nil {
		return Command{}, nil, err
	}
	return cmd, execs, nil
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

// AckExecution moves a dispatched execution of agentID to running. It reports
// false when the execution is unknown, belongs to another agent or is past that.
func (s *Store) AckExecution(ctx context.Context, executionID, agentID string, at time.Time) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Execution{}).
		Where("id = ? AND agent_id = ? AND status = ?", executionID, agentID, ExecDispatched).
		Updates(map[string]any{"status": ExecRunning, "started_at": at.UTC(), "updated_at": at.UTC()})
	if res.Error != nil {
		return false, fmt.Errorf("acknowledging execution: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// Result is an agent's report of a finished execution.
type Result struct {
	ExecutionID string
	AgentID     string
	Status      string // succeeded or failed
	ExitCode    int
	Output      string
	Error       string
	StartedAt   time.Time
	FinishedAt  time.Time
}

// RecordResult stores a result if the execution belongs to the agent and is not
// final yet: the first terminal result wins, later duplicates are ignored. It
// returns the command id and whether this result was recorded.
func (s *Store) RecordResult(ctx context.Context, r Result) (commandID string, recorded bool, err error) {
	if r.Status != ExecSucceeded && r.Status != ExecFailed {
		return "", false, fmt.Errorf("recording result: invalid status %q", r.Status)
	}
	var exec Execution
	res := s.db.WithContext(ctx).Select("id", "command_id").Where("id = ? AND agent_id = ?", r.ExecutionID, r.AgentID).Limit(1).Find(&exec)
	if res.Error != nil {
		return "", false, fmt.Errorf("recording result: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return "", false, nil
	}
	finished := r.FinishedAt.UTC()
	if finished.IsZero() {
		finished = time.Now().UTC()
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockCommand(tx, exec.CommandID); err != nil {
			return err
		}
		upd := map[string]any{
			"status": r.Status, "exit_code": r.ExitCode, "output": r.Output, "error": r.Error,
			"finished_at": finished, "updated_at": time.Now().UTC(),
		}
		if !r.StartedAt.IsZero() {
			upd["started_at"] = r.StartedAt.UTC() // the agent's clock, consistent with finished_at
		}
		res := tx.Model(&Execution{}).
			Where("id = ? AND status IN ?", r.ExecutionID, []string{ExecDispatched, ExecRunning}).
			Updates(upd)
		if res.Error != nil {
			return fmt.Errorf("updating execution: %w", res.Error)
		}
		recorded = res.RowsAffected > 0
		if !recorded {
			return nil
		}
		return refreshCommand(tx, exec.CommandID)
	})
	if err != nil {
		return "", false, fmt.Errorf("recording result: %w", err)
	}
	return exec.CommandID, recorded, nil
}

// lockCommand takes the command's row lock (Postgres); SQLite's single writer
// already serialises the transaction, and its dialect drops the locking clause.
func lockCommand(tx *gorm.DB, id string) error {
	var got []string
	if err := tx.Model(&Command{}).Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Pluck("id", &got).Error; err != nil {
		return fmt.Errorf("locking command: %w", err)
	}
	return nil
}

// refreshCommand recomputes a command's aggregate status from its executions.
// The caller holds the command's row lock.
func refreshCommand(tx *gorm.DB, id string) error {
	type row struct {
		Status string
		N      int
	}
	var rows []row
	if err := tx.Model(&Execution{}).Select("status, count(*) AS n").Where("command_id = ?", id).Group("status").Scan(&rows).Error; err != nil {
		return fmt.Errorf("counting executions: %w", err)
	}
	counts := make(map[string]int, len(rows))
	for _, r := range rows {
		counts[r.Status] = r.N
	}
	status, final := Aggregate(counts)
	now := time.Now().UTC()
	upd := map[string]any{"status": status, "updated_at": now}
	if final {
		upd["finished_at"] = gorm.Expr("coalesce(finished_at, ?)", now)
	}
	if err := tx.Model(&Command{}).Where("id = ?", id).Updates(upd).Error; err != nil {
		return fmt.Errorf("updating command status: %w", err)
	}
	return nil
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
