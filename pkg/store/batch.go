package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Ack is an agent's acknowledgement of an execution.
type Ack struct {
	ExecutionID string
	AgentID     string
	At          time.Time
}

// Result is an agent's report of a finished execution.
type Result struct {
	ExecutionID string
	CommandID   string // as the agent reported it; checked, never trusted
	AgentID     string
	Status      string // succeeded or failed
	ExitCode    int
	Output      string
	Error       string
	StartedAt   time.Time
	FinishedAt  time.Time
}

// Batch is what a gateway writes together: the acks and results that arrived
// while its previous write was in flight (a group commit).
type Batch struct {
	Acks    []Ack
	Results []Result
}

// ResultOutcome says what became of one result.
type ResultOutcome struct {
	CommandID string
	Recorded  bool // false: unknown, another agent's, or already final (a duplicate)
}

// BatchOutcome has one ResultOutcome per Batch.Results entry and one Acked
// flag per Batch.Acks entry (true: the execution moved to running), in order.
type BatchOutcome struct {
	Results []ResultOutcome
	Acked   []bool
}

// RecordBatch writes acks and results in one transaction. A result is recorded
// if its execution belongs to the agent and is not final yet: the first
// terminal result wins, later duplicates are ignored; a failed result is final
// too (the agent ran the command; it is not retried), and a result for an
// execution put back to retrying still counts (the agent did run it). Each
// command touched is locked once, in id order (so concurrent batches cannot
// deadlock), and its aggregate recomputed once. Acks move dispatched
// executions to running.
func (s *Store) RecordBatch(ctx context.Context, b Batch) (BatchOutcome, error) {
	out := BatchOutcome{Results: make([]ResultOutcome, len(b.Results)), Acked: make([]bool, len(b.Acks))}
	for _, r := range b.Results {
		if r.Status != ExecSucceeded && r.Status != ExecFailed {
			return out, fmt.Errorf("recording result: invalid status %q", r.Status)
		}
	}
	var changes []CommandChange
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		cmds, err := lockResultCommands(tx, s.dialect, b.Results)
		if err != nil {
			return err
		}
		byCommand := map[string][]int{}
		for i, r := range b.Results {
			if r.CommandID != "" {
				byCommand[r.CommandID] = append(byCommand[r.CommandID], i)
			}
		}
		now := time.Now().UTC()
		for _, cmd := range cmds {
			id := cmd.ID
			changed := false
			for _, i := range byCommand[id] {
				recorded, err := recordResult(tx, b.Results[i], now)
				if err != nil {
					return err
				}
				out.Results[i] = ResultOutcome{CommandID: id, Recorded: recorded}
				changed = changed || recorded
			}
			if !changed {
				continue
			}
			if cmd.MaxErrors == nil && cmd.Status == CommandRunning {
				// A result was recorded, so one execution is final: while any
				// other is open the aggregate stays running. Asking that is one
				// index probe; recounting a 10,000-agent fan-out per batch is not.
				open, err := hasOpenExecutions(tx, id)
				if err != nil {
					return err
				}
				if open {
					continue
				}
			}
			if err := refreshCommand(tx, cmd, &changes); err != nil {
				return err
			}
		}
		// Acks after every command lock: nothing here waits for a command row
		// while holding an execution another transaction needs with its command.
		for i, a := range b.Acks {
			if out.Acked[i], err = ackExecution(tx, a, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("recording batch: %w", err)
	}
	s.notify(ctx, changes)
	return out, nil
}

// lockResultCommands finds each result's command through its execution
// (filling in the command id, so a wrong id sent by an agent cannot touch
// another command; results of unknown executions or of another agent's get
// none) and locks those commands in id order, all in one statement.
func lockResultCommands(tx *gorm.DB, dialect string, rs []Result) ([]lockedCommand, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ExecutionID
		rs[i].CommandID = ""
	}
	lock := " FOR UPDATE OF c"
	if dialect == SQLite {
		lock = "" // the single writer already serialises
	}
	type row struct {
		ID          string
		Status      string
		MaxErrors   *int
		FinishedAt  *time.Time
		ExecutionID string
		AgentID     string
	}
	var rows []row
	err := tx.Raw(`SELECT c.id, c.status, c.max_errors, c.finished_at, e.id AS execution_id, e.agent_id
FROM executions e JOIN commands c ON c.id = e.command_id
WHERE e.id IN ? ORDER BY c.id`+lock, ids).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("locking commands: %w", err)
	}
	byExec := make(map[string]row, len(rows))
	var cmds []lockedCommand
	for _, r := range rows {
		byExec[r.ExecutionID] = r
		if len(cmds) == 0 || cmds[len(cmds)-1].ID != r.ID {
			cmds = append(cmds, lockedCommand{ID: r.ID, Status: r.Status, MaxErrors: r.MaxErrors, FinishedAt: r.FinishedAt})
		}
	}
	for i := range rs {
		if r, ok := byExec[rs[i].ExecutionID]; ok && r.AgentID == rs[i].AgentID {
			rs[i].CommandID = r.ID
		}
	}
	return cmds, nil
}

func recordResult(tx *gorm.DB, r Result, now time.Time) (bool, error) {
	finished := r.FinishedAt.UTC()
	if r.FinishedAt.IsZero() {
		finished = now
	}
	upd := map[string]any{
		"status": r.Status, "exit_code": r.ExitCode, "output": r.Output, "error": r.Error,
		"finished_at": finished, "updated_at": now,
	}
	if !r.StartedAt.IsZero() {
		upd["started_at"] = r.StartedAt.UTC() // the agent's clock, consistent with finished_at
	}
	res := tx.Model(&Execution{}).
		Where("id = ? AND agent_id = ? AND status IN ?", r.ExecutionID, r.AgentID, []string{ExecDispatched, ExecRunning, ExecRetrying}).
		Updates(upd)
	if res.Error != nil {
		return false, fmt.Errorf("updating execution: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// ackExecution moves a dispatched execution of the acking agent to running.
func ackExecution(db *gorm.DB, a Ack, now time.Time) (bool, error) {
	res := db.Model(&Execution{}).
		Where("id = ? AND agent_id = ? AND status = ?", a.ExecutionID, a.AgentID, ExecDispatched).
		Updates(map[string]any{"status": ExecRunning, "started_at": a.At.UTC(), "updated_at": now})
	if res.Error != nil {
		return false, fmt.Errorf("acknowledging execution: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}
