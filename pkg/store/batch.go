package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
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
	// OutputTruncated says Output was cut to the protocol's output limit.
	OutputTruncated bool
	Error           string
	StartedAt       time.Time
	FinishedAt      time.Time
}

// Batch is what a gateway writes together: the acks and results that arrived
// while its previous write was in flight (a group commit).
type Batch struct {
	Acks    []Ack
	Results []Result
}

// What became of a result (ResultOutcome.Outcome).
const (
	ResultStored           = "stored"            // recorded now
	ResultDuplicate        = "duplicate"         // the execution was already final, or repeated in the batch
	ResultUnknownExecution = "unknown_execution" // no such execution
	ResultNotYours         = "not_yours"         // the execution belongs to another agent
)

// ResultOutcome says what became of one result.
type ResultOutcome struct {
	CommandID string
	Recorded  bool   // Outcome is ResultStored
	Outcome   string // ResultStored, ResultDuplicate, ResultUnknownExecution or ResultNotYours
}

// BatchOutcome has one ResultOutcome per Batch.Results entry and one Acked
// flag per Batch.Acks entry (true: the execution moved to running), in order.
// RefreshErr reports that the results are durable but updating the commands'
// aggregate status failed; the scheduler's sweep repairs it (it refreshes
// every unfinished command left without open executions).
type BatchOutcome struct {
	Results    []ResultOutcome
	Acked      []bool
	RefreshErr error
}

// RecordBatch writes acks and results in one transaction, then updates the
// aggregate status of the commands it finished work of in a second, short one.
// A result is recorded if its execution belongs to the agent and is not final
// yet: the first terminal result wins, later duplicates are ignored; a failed
// result is final too (the agent ran the command; it is not retried), and a
// result for an execution put back to retrying still counts (the agent did run
// it). Acks move dispatched executions to running.
//
// The first transaction touches executions only, so batches of one command do
// not queue behind each other; the second locks each command (in id order)
// and, in a statement after the lock, asks whether executions remain open:
// whichever batch commits its results last sees none and finalises the
// command.
func (s *Store) RecordBatch(ctx context.Context, b Batch) (BatchOutcome, error) {
	out := BatchOutcome{Results: make([]ResultOutcome, len(b.Results)), Acked: make([]bool, len(b.Acks))}
	for _, r := range b.Results {
		if r.Status != ExecSucceeded && r.Status != ExecFailed {
			return out, fmt.Errorf("recording result: invalid status %q", r.Status)
		}
	}
	var touched []string
	var moved []ExecutionChange
	// Until its execution changes are observed, the batch holds back the
	// command changes of concurrent batches in this process.
	seq := s.batches.begin()
	defer s.batches.end(seq)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		unresolved, err := resolveResultCommands(tx, b.Results)
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		recorded, err := recordResults(tx, s.dialect, b.Results, now)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for i, r := range b.Results {
			outcome := unresolved[i]
			switch {
			case recorded[i]:
				outcome = ResultStored
			case outcome == "":
				outcome = ResultDuplicate
			}
			out.Results[i] = ResultOutcome{CommandID: r.CommandID, Recorded: recorded[i], Outcome: outcome}
			if recorded[i] {
				moved = append(moved, ExecutionChange{ExecutionID: r.ExecutionID, CommandID: r.CommandID, AgentID: r.AgentID, Status: r.Status})
				if !seen[r.CommandID] {
					seen[r.CommandID] = true
					touched = append(touched, r.CommandID)
				}
			}
		}
		acked, err := ackExecutions(tx, s.dialect, b.Acks, now)
		if err != nil {
			return err
		}
		for i, cmd := range acked {
			if out.Acked[i] = cmd != ""; out.Acked[i] {
				moved = append(moved, ExecutionChange{ExecutionID: b.Acks[i].ExecutionID, CommandID: cmd, AgentID: b.Acks[i].AgentID, Status: ExecRunning})
			}
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("recording batch: %w", err)
	}
	s.notifyExecutions(ctx, moved)
	s.batches.end(seq)
	out.RefreshErr = s.refreshFinished(ctx, touched)
	return out, nil
}

// refreshFinished updates the aggregate of commands that just had results
// recorded, in one transaction holding their locks in id order. While a
// command without max_errors still has open executions its aggregate is
// "running" and is left alone: one probe of executions_open_idx instead of a
// recount.
func (s *Store) refreshFinished(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	var changes []CommandChange
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		cmds, err := lockCommands(tx, ids)
		if err != nil {
			return err
		}
		for _, cmd := range cmds {
			if cmd.MaxErrors == nil && cmd.Status == CommandRunning {
				open, err := hasOpenExecutions(tx, cmd.ID)
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
		return nil
	})
	if err != nil {
		return fmt.Errorf("refreshing commands: %w", err)
	}
	if len(changes) > 0 {
		// Batches whose results this transaction saw may not have been
		// observed yet: their execution changes come first.
		s.batches.wait(ctx, batchObserveWait)
	}
	s.notify(ctx, changes)
	return nil
}

// lockCommands is lockCommand for several commands, locked in id order in one
// statement.
func lockCommands(tx *gorm.DB, ids []string) ([]lockedCommand, error) {
	var cmds []lockedCommand
	err := tx.Model(&Command{}).Clauses(clause.Locking{Strength: "UPDATE"}).
		Select("id", "status", "max_errors", "finished_at").Where("id IN ?", ids).Order("id").Scan(&cmds).Error
	if err != nil {
		return nil, fmt.Errorf("locking commands: %w", err)
	}
	return cmds, nil
}

// resolveResultCommands finds each result's command through its execution,
// filling in the command id, so a wrong id sent by an agent cannot touch
// another command; results of unknown executions or of another agent's get
// none (and are not recorded): for those it reports ResultUnknownExecution or
// ResultNotYours, per result ("" for a resolved one).
func resolveResultCommands(tx *gorm.DB, rs []Result) ([]string, error) {
	unresolved := make([]string, len(rs))
	if len(rs) == 0 {
		return unresolved, nil
	}
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ExecutionID
		rs[i].CommandID = ""
	}
	var rows []struct {
		ID, CommandID, AgentID string
	}
	if err := tx.Raw(`SELECT id, command_id, agent_id FROM executions WHERE id IN ?`, ids).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("finding the results' commands: %w", err)
	}
	byExec := make(map[string]int, len(rows))
	for i, r := range rows {
		byExec[r.ID] = i
	}
	for i := range rs {
		j, ok := byExec[rs[i].ExecutionID]
		switch {
		case !ok:
			unresolved[i] = ResultUnknownExecution
		case rows[j].AgentID != rs[i].AgentID:
			unresolved[i] = ResultNotYours
		default:
			rs[i].CommandID = rows[j].CommandID
		}
	}
	return unresolved, nil
}

// recordResults writes the results whose command was found (CommandID set)
// and reports, per result, whether it was recorded. On Postgres that is one
// statement for the batch; a result repeated within the batch counts once
// (the first).
func recordResults(tx *gorm.DB, dialect string, rs []Result, now time.Time) ([]bool, error) {
	recorded := make([]bool, len(rs))
	first := map[string]int{}
	var idx []int
	for i, r := range rs {
		if r.CommandID == "" {
			continue
		}
		if _, dup := first[r.ExecutionID]; dup {
			continue
		}
		first[r.ExecutionID] = i
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return recorded, nil
	}
	if dialect != Postgres {
		for _, i := range idx {
			ok, err := recordResult(tx, rs[i], now)
			if err != nil {
				return nil, err
			}
			recorded[i] = ok
		}
		return recorded, nil
	}
	var sb strings.Builder
	args := make([]any, 0, len(idx)*9+1)
	sb.WriteString(`UPDATE executions AS e SET status = v.status, exit_code = v.exit_code, output = v.output,
  output_truncated = v.output_truncated, error = v.error, finished_at = v.finished_at, started_at = coalesce(v.started_at, e.started_at), updated_at = ?
FROM (VALUES `)
	args = append(args, now)
	for n, i := range idx {
		r := rs[i]
		if n > 0 {
			sb.WriteString(",")
		}
		sb.WriteString("(?::text, ?::text, ?::text, ?::integer, ?::text, ?::boolean, ?::text, ?::timestamptz, ?::timestamptz)")
		finished := r.FinishedAt.UTC()
		if r.FinishedAt.IsZero() {
			finished = now
		}
		var started *time.Time
		if !r.StartedAt.IsZero() {
			t := r.StartedAt.UTC() // the agent's clock, consistent with finished_at
			started = &t
		}
		args = append(args, r.ExecutionID, r.AgentID, r.Status, r.ExitCode, r.Output, r.OutputTruncated, r.Error, finished, started)
	}
	sb.WriteString(`) AS v(id, agent_id, status, exit_code, output, output_truncated, error, finished_at, started_at)
WHERE e.id = v.id AND e.agent_id = v.agent_id AND e.status IN ('dispatched', 'running', 'retrying')
RETURNING e.id`)
	var ids []string
	if err := tx.Raw(sb.String(), args...).Scan(&ids).Error; err != nil {
		return nil, fmt.Errorf("updating executions: %w", err)
	}
	for _, id := range ids {
		recorded[first[id]] = true
	}
	return recorded, nil
}

// ackExecutions moves the acked executions that are still dispatched to
// running (one statement on Postgres) and reports which moved.
func ackExecutions(tx *gorm.DB, dialect string, as []Ack, now time.Time) ([]string, error) {
	acked := make([]string, len(as))
	if len(as) == 0 {
		return acked, nil
	}
	if dialect != Postgres {
		for i, a := range as {
			cmd, err := ackExecution(tx, a, now)
			if err != nil {
				return nil, err
			}
			acked[i] = cmd
		}
		return acked, nil
	}
	first := map[string]int{}
	var sb strings.Builder
	args := make([]any, 0, len(as)*3+1)
	sb.WriteString(`UPDATE executions AS e SET status = 'running', started_at = v.at, updated_at = ?
FROM (VALUES `)
	args = append(args, now)
	n := 0
	for i, a := range as {
		if _, dup := first[a.ExecutionID]; dup {
			continue
		}
		first[a.ExecutionID] = i
		if n > 0 {
			sb.WriteString(",")
		}
		n++
		sb.WriteString("(?::text, ?::text, ?::timestamptz)")
		args = append(args, a.ExecutionID, a.AgentID, a.At.UTC())
	}
	sb.WriteString(`) AS v(id, agent_id, at)
WHERE e.id = v.id AND e.agent_id = v.agent_id AND e.status = 'dispatched'
RETURNING e.id, e.command_id`)
	var rows []struct{ ID, CommandID string }
	if err := tx.Raw(sb.String(), args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("acknowledging executions: %w", err)
	}
	for _, r := range rows {
		acked[first[r.ID]] = r.CommandID
	}
	return acked, nil
}

func recordResult(tx *gorm.DB, r Result, now time.Time) (bool, error) {
	finished := r.FinishedAt.UTC()
	if r.FinishedAt.IsZero() {
		finished = now
	}
	upd := map[string]any{
		"status": r.Status, "exit_code": r.ExitCode, "output": r.Output, "output_truncated": r.OutputTruncated, "error": r.Error,
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
func ackExecution(db *gorm.DB, a Ack, now time.Time) (string, error) {
	res := db.Model(&Execution{}).
		Where("id = ? AND agent_id = ? AND status = ?", a.ExecutionID, a.AgentID, ExecDispatched).
		Updates(map[string]any{"status": ExecRunning, "started_at": a.At.UTC(), "updated_at": now})
	if res.Error != nil {
		return "", fmt.Errorf("acknowledging execution: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return "", nil
	}
	var cmd string
	if err := db.Raw(`SELECT command_id FROM executions WHERE id = ?`, a.ExecutionID).Scan(&cmd).Error; err != nil {
		return "", fmt.Errorf("finding the acknowledged execution's command: %w", err)
	}
	return cmd, nil
}
