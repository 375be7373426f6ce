package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// Online registers agent id as online on gateway gw with a session, trusted
// at site "lab" with the label role=web and the capabilities echo and sleep.
func Online(t *testing.T, s *store.Store, id, gw, session string) {
	t.Helper()
	require.NoError(t, s.MarkAgentOnline(context.Background(), store.AgentSession{
		ID: id, Site: "lab", Capabilities: []string{"echo", "sleep"}, Labels: map[string]string{"role": "web"},
		GatewayID: gw, SessionID: session, At: time.Now(),
	}))
	trust(t, s, id, "lab", map[string]string{"role": "web"})
}

func routeAll(gw string) store.Router {
	return func(_ context.Context, ids []string) (map[string]string, error) {
		m := map[string]string{}
		for _, id := range ids {
			m[id] = gw
		}
		return m, nil
	}
}

func testCommandLifecycle(t *testing.T, s *store.Store) {
	ctx := context.Background()
	var changes []store.CommandChange
	s.ObserveCommands(func(_ context.Context, cs []store.CommandChange) { changes = append(changes, cs...) })
	Online(t, s, "a1", "gw1", "s1")
	Online(t, s, "a2", "gw1", "s2")

	_, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"a1", "nope", "zz"}}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
	var unknown *store.UnknownAgentsError
	require.ErrorAs(t, err, &unknown)
	require.Equal(t, []string{"nope", "zz"}, unknown.IDs)

	cmd, execs, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Args: store.JSON(`{"message":"hi"}`), Priority: store.PriorityNormal, Targeting: store.Targeting{AgentIDs: []string{"a1", "a2"}}, TTLSeconds: 60, TimeoutSeconds: 60, MaxRetries: 1, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
	require.NoError(t, err)
	require.Len(t, execs, 2)

	due, claimed, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Minute}, routeAll("gw1"))
	require.NoError(t, err)
	require.Equal(t, 2, claimed)
	require.Len(t, due, 2)
	require.Equal(t, "echo", due[0].Verb)
	require.Equal(t, 1, due[0].Attempts)
	require.JSONEq(t, `{"message":"hi"}`, string(due[0].Args))

	again, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Minute}, routeAll("gw1"))
	require.NoError(t, err)
	require.Empty(t, again, "dispatched executions are not claimed again")
	got, _, err := s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandQueued, got.Status, "until the scheduler has published")
	require.NoError(t, s.MarkCommandsRunning(ctx, []string{cmd.ID, cmd.ID}))

	got, _, err = s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandRunning, got.Status)

	byAgent := map[string]store.DueExecution{}
	for _, d := range due {
		byAgent[d.AgentID] = d
	}
	ok, err := s.AckExecution(ctx, byAgent["a1"].ExecutionID, "a2", time.Now())
	require.NoError(t, err)
	require.False(t, ok, "an agent cannot ack another agent's execution")
	ok, err = s.AckExecution(ctx, byAgent["a1"].ExecutionID, "a1", time.Now())
	require.NoError(t, err)
	require.True(t, ok)

	_, rec, err := s.RecordResult(ctx, store.Result{ExecutionID: byAgent["a1"].ExecutionID, AgentID: "a2", Status: "succeeded"})
	require.NoError(t, err)
	require.False(t, rec, "an agent cannot report another agent's execution")
	_, rec, err = s.RecordResult(ctx, store.Result{ExecutionID: byAgent["a1"].ExecutionID, AgentID: "a1", Status: "succeeded", Output: "hi", OutputTruncated: true, FinishedAt: time.Now()})
	require.NoError(t, err)
	require.True(t, rec)
	_, rec, err = s.RecordResult(ctx, store.Result{ExecutionID: byAgent["a1"].ExecutionID, AgentID: "a1", Status: "failed", Output: "dup"})
	require.NoError(t, err)
	require.False(t, rec, "first terminal result wins")
	_, rec, err = s.RecordResult(ctx, store.Result{ExecutionID: byAgent["a2"].ExecutionID, AgentID: "a2", Status: "failed", ExitCode: 1, Error: "boom"})
	require.NoError(t, err)
	require.True(t, rec)

	got, gotExecs, err := s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandPartiallySucceeded, got.Status)
	require.NotNil(t, got.FinishedAt)
	require.Equal(t, []store.CommandChange{
		{CommandID: cmd.ID, Status: store.CommandRunning}, // once, though marked twice
		{CommandID: cmd.ID, Status: store.CommandPartiallySucceeded},
	}, changes, "every committed status change is observed once")
	require.Equal(t, "hi", gotExecs[0].Output)
	require.True(t, gotExecs[0].OutputTruncated)
	require.False(t, gotExecs[1].OutputTruncated)
	require.Equal(t, store.ExecSucceeded, gotExecs[0].Status)
	require.Equal(t, store.ExecFailed, gotExecs[1].Status)

	// One batch reports per result what became of it.
	out, err := s.RecordBatch(ctx, store.Batch{Results: []store.Result{
		{ExecutionID: byAgent["a1"].ExecutionID, AgentID: "a1", Status: "succeeded"},
		{ExecutionID: "made-up", AgentID: "a1", Status: "succeeded"},
		{ExecutionID: byAgent["a2"].ExecutionID, AgentID: "a1", Status: "succeeded"},
	}})
	require.NoError(t, err)
	outcomes := []string{}
	for _, r := range out.Results {
		outcomes = append(outcomes, r.Outcome)
		require.False(t, r.Recorded)
	}
	require.Equal(t, []string{store.ResultDuplicate, store.ResultUnknownExecution, store.ResultNotYours}, outcomes)

	_, _, err = s.GetCommand(ctx, "00000000-0000-0000-0000-000000000000")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testClaimSkipsOfflineAndOrdersByPriority(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw1", "s1")
	Online(t, s, "off", "gw1", "s9")
	_, err := s.MarkAgentOffline(ctx, "off", "s9", time.Now())
	require.NoError(t, err)
	mk := func(p store.Priority, agent string) string {
		c, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Priority: p, Targeting: store.Targeting{AgentIDs: []string{agent}}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "x"}})
		require.NoError(t, err)
		return c.ID
	}
	low := mk(store.PriorityLow, "a1")
	_ = mk(store.PriorityCritical, "off")
	crit := mk(store.PriorityCritical, "a1")
	normal := mk(store.PriorityNormal, "a1")
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Minute}, routeAll("gw"))
	require.NoError(t, err)
	var order []string
	for _, d := range due {
		order = append(order, d.CommandID)
	}
	require.Equal(t, []string{crit, normal, low}, order)
}

func testConcurrentClaimsNeverOverlap(t *testing.T, s *store.Store) {
	ctx := context.Background()
	var agents []string
	for i := range 20 {
		id := "c" + string(rune('a'+i))
		Online(t, s, id, "gw", "s-"+id)
		agents = append(agents, id)
	}
	for range 10 {
		_, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: agents}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "x"}})
		require.NoError(t, err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				due, claimed, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 7, AckTimeout: time.Minute}, routeAll("gw"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, d := range due {
					seen[d.ExecutionID]++
				}
				mu.Unlock()
				if claimed == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Len(t, seen, 200)
	for id, n := range seen {
		require.Equal(t, 1, n, "execution %s claimed %d times", id, n)
	}
}

func testSweepRetriesTimesOutAndExpires(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw", "s1")
	c, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"a1"}}, TTLSeconds: 3600, TimeoutSeconds: 30, MaxRetries: 1, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "x"}})
	require.NoError(t, err)
	t0 := time.Now()
	policy := store.RetryPolicy{Base: time.Second, Max: time.Minute, Jitter: noJitter}
	_, _, err = s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Second, Now: t0}, routeAll("gw"))
	require.NoError(t, err)

	// No ACK by the deadline: retrying with backoff (1s for the first retry).
	_, err = s.Sweep(ctx, t0.Add(2*time.Second), policy)
	require.NoError(t, err)
	_, ex, err := s.GetCommand(ctx, c.ID)
	require.NoError(t, err)
	require.Equal(t, store.ExecRetrying, ex[0].Status)
	require.WithinDuration(t, t0.Add(3*time.Second), ex[0].NextAttemptAt, time.Millisecond)
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Second, Now: t0.Add(2500 * time.Millisecond)}, routeAll("gw"))
	require.NoError(t, err)
	require.Empty(t, due, "not before the backoff has passed")

	// Second attempt, still no ACK: retries used up → failed.
	due, _, err = s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Second, Now: t0.Add(3 * time.Second)}, routeAll("gw"))
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, 2, due[0].Attempts)
	_, err = s.Sweep(ctx, t0.Add(5*time.Second), policy)
	require.NoError(t, err)
	got, ex, err := s.GetCommand(ctx, c.ID)
	require.NoError(t, err)
	require.Equal(t, store.ExecFailed, ex[0].Status)
	require.Equal(t, store.CommandFailed, got.Status)

	// Running past the command timeout: timed_out, returned for a CANCEL.
	c2, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "sleep", Targeting: store.Targeting{AgentIDs: []string{"a1"}}, TTLSeconds: 3600, TimeoutSeconds: 30, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "x"}})
	require.NoError(t, err)
	due, _, err = s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Hour}, routeAll("gw"))
	require.NoError(t, err)
	ok, err := s.AckExecution(ctx, due[0].ExecutionID, "a1", time.Now())
	require.NoError(t, err)
	require.True(t, ok)
	ended, err := s.Sweep(ctx, time.Now().Add(time.Minute), store.RetryPolicy{Base: time.Second, Max: time.Minute, Jitter: noJitter})
	require.NoError(t, err)
	require.Len(t, ended, 1)
	require.Equal(t, due[0].ExecutionID, ended[0].ExecutionID)
	got, _, err = s.GetCommand(ctx, c2.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandTimedOut, got.Status)

	// Queued past the TTL: expired.
	c3, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"a1"}}, TTLSeconds: 1, TimeoutSeconds: 30, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "x"}})
	require.NoError(t, err)
	_, err = s.Sweep(ctx, time.Now().Add(5*time.Second), store.RetryPolicy{Base: time.Second, Max: time.Minute, Jitter: noJitter})
	require.NoError(t, err)
	got, _, err = s.GetCommand(ctx, c3.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandExpired, got.Status)
}

func testAgentsOnlineOfflineTouchList(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "b1", "gw1", "s1")
	Online(t, s, "b2", "gw1", "s2")
	Online(t, s, "b1", "gw2", "s3") // reconnect elsewhere
	ok, err := s.MarkAgentOffline(ctx, "b1", "s1", time.Now())
	require.NoError(t, err)
	require.False(t, ok, "a stale session cannot mark the agent offline")
	a, err := s.GetAgent(ctx, "b1")
	require.NoError(t, err)
	require.Equal(t, store.AgentOnline, a.Status)
	require.Equal(t, "gw2", a.GatewayID)
	require.Equal(t, []string{"echo", "sleep"}, []string(a.Capabilities))

	require.NoError(t, s.TouchAgents(ctx, []store.HealthUpdate{{AgentID: "b1", Status: "degraded", UptimeS: 42, At: time.Now()}, {AgentID: "b2", Status: "healthy", UptimeS: 7, At: time.Now()}}))
	a, err = s.GetAgent(ctx, "b1")
	require.NoError(t, err)
	require.Equal(t, "degraded", a.HealthStatus)
	require.Equal(t, int64(42), a.UptimeS)

	ok, err = s.MarkAgentOffline(ctx, "b2", "s2", time.Now())
	require.NoError(t, err)
	require.True(t, ok)
	list, err := s.ListAgents(ctx, store.AgentFilter{Status: store.AgentOnline, Limit: 10})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "b1", list[0].ID)
	list, err = s.ListAgents(ctx, store.AgentFilter{Limit: 1, After: "b1"})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "b2", list[0].ID)
	_, err = s.GetAgent(ctx, "none")
	require.ErrorIs(t, err, store.ErrNotFound)

	require.NoError(t, s.InsertTelemetry(ctx, []store.TelemetrySample{{AgentID: "b1", TS: time.Now(), Metrics: store.JSON(`{"cpu_percent":1}`), ReceivedAt: time.Now()}}))
	n, err := s.MarkGatewayAgentsOffline(ctx, "gw2", time.Now())
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func noJitter(d time.Duration) time.Duration { return d }
