package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// agentWith brings an agent online announcing caps, with the site and labels
// an admin gives it (what it reports in HELLO is not trusted).
func agentWith(t *testing.T, s *store.Store, id, site string, labels map[string]string, caps ...string) {
	t.Helper()
	require.NoError(t, s.MarkAgentOnline(context.Background(), store.AgentSession{
		ID: id, Site: site, Labels: labels, Capabilities: caps, GatewayID: "gw", SessionID: "s-" + id, At: time.Now(),
	}))
	trust(t, s, id, site, labels)
}

// trust sets an agent's trusted site and labels as an admin does.
func trust(t *testing.T, s *store.Store, id, site string, labels map[string]string) {
	t.Helper()
	p := store.AttributesPatch{Site: &site, Labels: map[string]*string{}, MaxLabels: 32,
		Audit: store.AuditEvent{Actor: "admin", Action: "agent.update"}}
	for k, v := range labels {
		p.Labels[k] = &v
	}
	_, err := s.PatchAgentAttributes(context.Background(), id, p)
	require.NoError(t, err)
}

func newCmd(verb string, t store.Targeting) store.NewCommand {
	return store.NewCommand{Verb: verb, Targeting: t, TTLSeconds: 3600, TimeoutSeconds: 60, MaxRetries: 2, CreatedBy: "t",
		Audit: store.AuditEvent{Actor: "t", Action: "command.create"}}
}

func execAgents(execs []store.Execution) []string {
	out := make([]string, 0, len(execs))
	for _, e := range execs {
		out = append(out, e.AgentID)
	}
	return out
}

func testTargeting(t *testing.T, s *store.Store) {
	ctx := context.Background()
	agentWith(t, s, "web-1", "prod", map[string]string{"role": "web"}, "echo", "restart")
	agentWith(t, s, "web-2", "prod", map[string]string{"role": "web"}, "echo")
	agentWith(t, s, "db-1", "prod", map[string]string{"role": "db"}, "echo", "restart")
	agentWith(t, s, "web-9", "lab", map[string]string{"role": "web"}, "echo")

	_, execs, err := s.CreateCommand(ctx, newCmd("echo", store.Targeting{Selector: &store.Selector{Site: "prod", Labels: map[string]string{"role": "web"}}}))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"web-1", "web-2"}, execAgents(execs))

	_, execs, err = s.CreateCommand(ctx, newCmd("restart", store.Targeting{Selector: &store.Selector{Capability: "restart"}}))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"web-1", "db-1"}, execAgents(execs))

	_, execs, err = s.CreateCommand(ctx, newCmd("echo", store.Targeting{AgentIDs: []string{"web-9"}, Selector: &store.Selector{Labels: map[string]string{"role": "db"}}}))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"web-9", "db-1"}, execAgents(execs), "explicit targets and selector matches together")

	_, _, err = s.CreateCommand(ctx, newCmd("restart", store.Targeting{AgentIDs: []string{"web-1", "web-2"}}))
	var incapable *store.IncapableAgentsError
	require.ErrorAs(t, err, &incapable)
	require.Equal(t, []string{"web-2"}, incapable.IDs)

	_, _, err = s.CreateCommand(ctx, newCmd("echo", store.Targeting{Selector: &store.Selector{Site: "mars"}}))
	require.ErrorIs(t, err, store.ErrNoMatchingAgents)

	// mode any: the online agent with the least work.
	busy, _, err := s.CreateCommand(ctx, newCmd("echo", store.Targeting{AgentIDs: []string{"web-1"}}))
	require.NoError(t, err)
	_, _, err = s.ClaimDue(ctx, store.ClaimOptions{Limit: 100, AckTimeout: time.Minute}, routeAll("gw"))
	require.NoError(t, err)
	_ = busy
	any := newCmd("echo", store.Targeting{Selector: &store.Selector{Site: "prod", Labels: map[string]string{"role": "web"}}})
	any.Mode = store.ModeAny
	anyCmd, execs, err := s.CreateCommand(ctx, any)
	require.NoError(t, err)
	require.Equal(t, []string{"web-2"}, execAgents(execs), "web-1 has work in flight")

	// Failover: web-2 takes the command but never acknowledges it.
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 100, AckTimeout: time.Millisecond}, routeAll("gw"))
	require.NoError(t, err)
	require.Len(t, due, 1)
	time.Sleep(5 * time.Millisecond)
	_, err = s.Sweep(ctx, time.Now(), store.RetryPolicy{Base: time.Hour, Max: time.Hour, Jitter: noJitter})
	require.NoError(t, err)
	_, ex, err := s.GetCommand(ctx, anyCmd.ID)
	require.NoError(t, err)
	require.Equal(t, "web-1", ex[0].AgentID, "moved to the next matching agent")
	require.Equal(t, store.ExecQueued, ex[0].Status, "at once, without the retry delay")

	// Nobody online: mode any fails fast.
	_, err = s.MarkAgentOffline(ctx, "web-1", "s-web-1", time.Now())
	require.NoError(t, err)
	_, err = s.MarkAgentOffline(ctx, "web-2", "s-web-2", time.Now())
	require.NoError(t, err)
	_, _, err = s.CreateCommand(ctx, any)
	require.ErrorIs(t, err, store.ErrNoOnlineAgent)
}

func testCaps(t *testing.T, s *store.Store) {
	ctx := context.Background()
	var ids []string
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		agentWith(t, s, id, "x", nil, "echo")
		ids = append(ids, id)
	}
	opts := store.ClaimOptions{Limit: 100, AckTimeout: time.Minute}

	// max_concurrency: at most 2 of this command in flight.
	nc := newCmd("echo", store.Targeting{AgentIDs: ids})
	nc.MaxConcurrency = 2
	c, _, err := s.CreateCommand(ctx, nc)
	require.NoError(t, err)
	due, _, err := s.ClaimDue(ctx, opts, routeAll("gw"))
	require.NoError(t, err)
	require.Len(t, due, 2)
	due2, _, err := s.ClaimDue(ctx, opts, routeAll("gw"))
	require.NoError(t, err)
	require.Empty(t, due2)
	_, rec, err := s.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: due[0].AgentID, Status: "succeeded"})
	require.NoError(t, err)
	require.True(t, rec)
	due2, _, err = s.ClaimDue(ctx, opts, routeAll("gw"))
	require.NoError(t, err)
	require.Len(t, due2, 1, "a slot freed by the result")
	_ = c

	// Per-agent cap: c1..c4 each get at most 1 more with PerAgent 1... c-agents with one in flight are full.
	perAgent := store.ClaimOptions{Limit: 100, AckTimeout: time.Minute, PerAgent: 1}
	busy := map[string]bool{due[1].AgentID: true, due2[0].AgentID: true}
	_, _, err = s.CreateCommand(ctx, newCmd("echo", store.Targeting{AgentIDs: ids}))
	require.NoError(t, err)
	due3, _, err := s.ClaimDue(ctx, perAgent, routeAll("gw"))
	require.NoError(t, err)
	for _, d := range due3 {
		require.False(t, busy[d.AgentID], "agent %s already has one in flight", d.AgentID)
	}
	require.Len(t, due3, 2)

	// Global cap across everything in flight.
	_, _, err = s.CreateCommand(ctx, newCmd("echo", store.Targeting{AgentIDs: ids}))
	require.NoError(t, err)
	global := store.ClaimOptions{Limit: 100, AckTimeout: time.Minute, MaxInFlight: 5}
	due4, _, err := s.ClaimDue(ctx, global, routeAll("gw"))
	require.NoError(t, err)
	require.Len(t, due4, 1, "4 already in flight, cap 5")

	// Queue bound.
	full := newCmd("echo", store.Targeting{AgentIDs: ids})
	full.MaxQueued = 3
	_, _, err = s.CreateCommand(ctx, full)
	require.ErrorIs(t, err, store.ErrQueueFull)
}

func testMaxErrorsAndCancel(t *testing.T, s *store.Store) {
	ctx := context.Background()
	var ids []string
	for _, id := range []string{"m1", "m2", "m3", "m4"} {
		agentWith(t, s, id, "x", nil, "echo")
		ids = append(ids, id)
	}
	nc := newCmd("echo", store.Targeting{AgentIDs: ids})
	nc.MaxConcurrency = 2
	zero := 0
	nc.MaxErrors = &zero
	c, _, err := s.CreateCommand(ctx, nc)
	require.NoError(t, err)
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 100, AckTimeout: time.Minute}, routeAll("gw"))
	require.NoError(t, err)
	require.Len(t, due, 2)
	_, _, err = s.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: due[0].AgentID, Status: "failed", ExitCode: 1})
	require.NoError(t, err)
	got, ex, err := s.GetCommand(ctx, c.ID)
	require.NoError(t, err)
	counts := map[string]int{}
	for _, e := range ex {
		counts[e.Status]++
	}
	require.Equal(t, map[string]int{"failed": 1, "dispatched": 1, "cancelled": 2}, counts, "the queued rest is cancelled once errors exceed max_errors")
	require.Equal(t, store.CommandRunning, got.Status)

	// Cancel: the running one ends cancelled and is returned for a CANCEL frame.
	running, err := s.CancelCommand(ctx, c.ID, "alice", "req-1")
	require.NoError(t, err)
	require.Len(t, running, 1)
	require.Equal(t, due[1].ExecutionID, running[0].ExecutionID)
	require.Equal(t, "gw", running[0].GatewayID)
	got, _, err = s.GetCommand(ctx, c.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandFailed, got.Status)
	require.NotNil(t, got.FinishedAt)
	_, err = s.CancelCommand(ctx, c.ID, "alice", "req-2")
	require.ErrorIs(t, err, store.ErrCommandFinal)
	_, err = s.CancelCommand(ctx, "00000000-0000-0000-0000-000000000000", "alice", "req-3")
	require.ErrorIs(t, err, store.ErrNotFound)
	n, err := s.CountAudit(ctx, "command.cancel")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)

	// A late result after cancellation is ignored.
	_, rec, err := s.RecordResult(ctx, store.Result{ExecutionID: due[1].ExecutionID, AgentID: due[1].AgentID, Status: "succeeded"})
	require.NoError(t, err)
	require.False(t, rec)
}

func testAgentDisconnectRetries(t *testing.T, s *store.Store) {
	ctx := context.Background()
	agentWith(t, s, "d1", "x", nil, "echo")
	c, _, err := s.CreateCommand(ctx, newCmd("echo", store.Targeting{AgentIDs: []string{"d1"}}))
	require.NoError(t, err)
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Minute}, routeAll("gw-a"))
	require.NoError(t, err)
	require.Len(t, due, 1)
	ok, err := s.AckExecution(ctx, due[0].ExecutionID, "d1", time.Now())
	require.NoError(t, err)
	require.True(t, ok)

	policy := store.RetryPolicy{Base: time.Second, Max: time.Minute, Jitter: noJitter}
	touched, err := s.ReleaseAgentExecutions(ctx, "d1", "gw-other", policy)
	require.NoError(t, err)
	require.Empty(t, touched, "only executions dispatched through that gateway")
	touched, err = s.ReleaseAgentExecutions(ctx, "d1", "gw-a", policy)
	require.NoError(t, err)
	require.Equal(t, []string{c.ID}, touched)
	_, ex, err := s.GetCommand(ctx, c.ID)
	require.NoError(t, err)
	require.Equal(t, store.ExecRetrying, ex[0].Status)
	require.WithinDuration(t, time.Now().Add(time.Second), ex[0].NextAttemptAt, 500*time.Millisecond)

	// The agent did finish it and reports from its outbox after reconnecting: accepted.
	_, rec, err := s.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: "d1", Status: "succeeded", Output: "late"})
	require.NoError(t, err)
	require.True(t, rec)
	got, _, err := s.GetCommand(ctx, c.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandSucceeded, got.Status)
}
