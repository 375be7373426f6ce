package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// ConcurrentResultBatchesFinishACommandOnce: result batches of one command
// are written without waiting for each other, yet whichever commits last
// finalises the command, exactly once.
func testConcurrentResultBatches(t *testing.T, s *store.Store) {
	ctx := context.Background()
	const agents, writers = 40, 8
	var ids []string
	for i := range agents {
		id := fmt.Sprintf("fan-%02d", i)
		Online(t, s, id, "gw1", "s-"+id)
		ids = append(ids, id)
	}
	var mu sync.Mutex
	var changes []store.CommandChange
	s.ObserveCommands(func(_ context.Context, cs []store.CommandChange) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, cs...)
	})
	cmd, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: ids}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
	require.NoError(t, err)
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: agents, AckTimeout: time.Minute, PerAgent: 1}, routeAll("gw1"))
	require.NoError(t, err)
	require.Len(t, due, agents)
	require.NoError(t, s.MarkCommandsRunning(ctx, []string{cmd.ID}))

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b store.Batch
			for i := w; i < len(due); i += writers {
				b.Results = append(b.Results, store.Result{ExecutionID: due[i].ExecutionID, AgentID: due[i].AgentID, Status: store.ExecSucceeded, Output: "ok"})
			}
			out, err := s.RecordBatch(ctx, b)
			if err == nil {
				err = out.RefreshErr
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got, _, err := s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandSucceeded, got.Status)
	require.NotNil(t, got.FinishedAt)
	final := 0
	for _, c := range changes {
		if c.Status == store.CommandSucceeded {
			final++
		}
	}
	require.Equal(t, 1, final, "finalised exactly once: %v", changes)
}

// TestStatusChangesAreObservedInCommitOrder: the execution changes of result
// batches (running on an ack, with the command's id; the results) are
// observed before the command change they lead to, even when another of the
// concurrent batches is the one that finalises the command.
func testStatusChangesInOrder(t *testing.T, s *store.Store) {
	ctx := context.Background()
	const agents, writers, rounds = 24, 8, 5
	var ids []string
	for i := range agents {
		id := fmt.Sprintf("ord-%02d", i)
		Online(t, s, id, "gw1", "s-"+id)
		ids = append(ids, id)
	}
	type seen struct{ kind, command, execution, status string }
	var mu sync.Mutex
	var log []seen
	s.ObserveCommands(func(_ context.Context, cs []store.CommandChange) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			log = append(log, seen{"command", c.CommandID, "", c.Status})
		}
	})
	s.ObserveExecutions(func(_ context.Context, cs []store.ExecutionChange) {
		time.Sleep(time.Millisecond) // a slow subscriber widens the window between commit and report
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			log = append(log, seen{"execution", c.CommandID, c.ExecutionID, c.Status})
		}
	})
	concurrently := func(due []store.DueExecution, batch func(d store.DueExecution, b *store.Batch)) {
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var b store.Batch
				for i := w; i < len(due); i += writers {
					batch(due[i], &b)
				}
				out, err := s.RecordBatch(ctx, b)
				if err == nil {
					err = out.RefreshErr
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	for range rounds {
		cmd, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: ids}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
		require.NoError(t, err)
		due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: agents, AckTimeout: time.Minute, PerAgent: 1}, routeAll("gw1"))
		require.NoError(t, err)
		require.Len(t, due, agents)
		require.NoError(t, s.MarkCommandsRunning(ctx, []string{cmd.ID}))
		concurrently(due, func(d store.DueExecution, b *store.Batch) {
			b.Acks = append(b.Acks, store.Ack{ExecutionID: d.ExecutionID, AgentID: d.AgentID, At: time.Now()})
		})
		concurrently(due, func(d store.DueExecution, b *store.Batch) {
			b.Results = append(b.Results, store.Result{ExecutionID: d.ExecutionID, AgentID: d.AgentID, Status: store.ExecSucceeded, Output: "ok"})
		})

		mu.Lock()
		running, finished, final := 0, 0, -1
		for i, e := range log {
			if e.command != cmd.ID {
				continue
			}
			switch {
			case e.kind == "execution" && e.status == store.ExecRunning:
				running++
			case e.kind == "execution" && e.status == store.ExecSucceeded:
				require.Equal(t, -1, final, "execution %s reported after its command finished: %v", e.execution, log)
				finished++
			case e.kind == "command" && e.status == store.CommandSucceeded:
				final = i
			}
		}
		mu.Unlock()
		require.Equal(t, agents, running, "every ack is reported as running, with its command's id")
		require.Equal(t, agents, finished)
		require.NotEqual(t, -1, final, "the command's success is reported")
	}
}
