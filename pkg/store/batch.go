package store

import (
	"context"
	"fmt"
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
		now := time.Now().UTC()
		recorded, err := recordResults(tx, s.dialect, b.Results, now)
		if err != nil {
			return err
		}
		unresolved, err := resolveUnrecorded(tx, b.Results, recorded)
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

// recordResults writes the results of executions that belong to their agent
// and are not final yet, and reports, per result, whether it was recorded,
// setting the CommandID of a recorded one from its execution (the agent's is
// never trusted). On Postgres that is one statement for the batch; a result
// repeated within the batch counts once (the first).
func recordResults(tx *gorm.DB, d dialect, rs []Result, now time.Time) ([]bool, error) {
	first := map[string]int{}
	var idx []int
	for i, r := range rs {
		rs[i].CommandID = ""
		if _, dup := first[r.ExecutionID]; dup {
			continue
		}
		first[r.ExecutionID] = i
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return make([]bool, len(rs)), nil
	}
	commands, err := d.recordResults(tx, rs, idx, now)
	if err != nil {
		return nil, err
	}
	recorded := make([]bool, len(rs))
	for i, cmd := range commands {
		if cmd != "" {
			rs[i].CommandID, recorded[i] = cmd, true
		}
	}
	return recorded, nil
}

// resolveUnrecorded tells, for each result that was not recorded, why: its
// execution is unknown (ResultUnknownExecution), another agent's
// (ResultNotYours) or already final ("", a duplicate, whose CommandID it
// fills in). Only a batch with unrecorded results costs this query.
func resolveUnrecorded(tx *gorm.DB, rs []Result, recorded []bool) ([]string, error) {
	unresolved := make([]string, len(rs))
	var ids []string
	for i, r := range rs {
		if !recorded[i] {
			ids = append(ids, r.ExecutionID)
		}
	}
	if len(ids) == 0 {
		return unresolved, nil
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
		if recorded[i] {
			continue
		}
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

// ackExecutions moves the acked executions that are still dispatched to
// running (one statement on Postgres) and reports which moved.
func ackExecutions(tx *gorm.DB, d dialect, as []Ack, now time.Time) ([]string, error) {
	if len(as) == 0 {
		return nil, nil
	}
	return d.ackExecutions(tx, as, now)
}
