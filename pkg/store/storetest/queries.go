package storetest

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func register(t *testing.T, s *store.Store, id, site, gw string, caps []string, labels map[string]string) {
	t.Helper()
	require.NoError(t, s.MarkAgentOnline(context.Background(), store.AgentSession{
		ID: id, Site: site, Capabilities: caps, Labels: labels, GatewayID: gw, SessionID: "s-" + id, At: time.Now(),
	}))
	trust(t, s, id, site, labels)
}

func ids(agents []store.Agent) []string {
	out := []string{}
	for _, a := range agents {
		out = append(out, a.ID)
	}
	return out
}

func testAgentFilters(t *testing.T, s *store.Store) {
	ctx := context.Background()
	register(t, s, "web-1", "prod", "gw1", []string{"echo", "create_user"}, map[string]string{"role": "web", "tier": "1"})
	register(t, s, "web-2", "prod", "gw1", []string{"echo"}, map[string]string{"role": "web", "tier": "2"})
	register(t, s, "Web-3", "lab", "gw2", []string{"create_user"}, map[string]string{"role": "db"})
	register(t, s, "a_b", "lab", "gw2", nil, nil)
	register(t, s, "axb", "lab", "gw2", []string{"echo_x"}, map[string]string{"rolex": "web"})
	_, err := s.MarkAgentOffline(ctx, "web-2", "s-web-2", time.Now())
	require.NoError(t, err)

	cases := []struct {
		name string
		f    store.AgentFilter
		want []string
	}{
		{"all", store.AgentFilter{}, []string{"Web-3", "a_b", "axb", "web-1", "web-2"}},
		{"status", store.AgentFilter{Status: store.AgentOffline}, []string{"web-2"}},
		{"site", store.AgentFilter{Site: "prod"}, []string{"web-1", "web-2"}},
		{"one label", store.AgentFilter{Labels: map[string]string{"role": "web"}}, []string{"web-1", "web-2"}},
		{"two labels", store.AgentFilter{Labels: map[string]string{"role": "web", "tier": "2"}}, []string{"web-2"}},
		{"label value mismatch", store.AgentFilter{Labels: map[string]string{"role": "cache"}}, []string{}},
		{"capability", store.AgentFilter{Capability: "create_user"}, []string{"Web-3", "web-1"}},
		{"capability is exact", store.AgentFilter{Capability: "echo"}, []string{"web-1", "web-2"}},
		{"prefix is case sensitive", store.AgentFilter{IDPrefix: "web-"}, []string{"web-1", "web-2"}},
		{"prefix underscore is literal", store.AgentFilter{IDPrefix: "a_"}, []string{"a_b"}},
		{"prefix percent is literal", store.AgentFilter{IDPrefix: "%"}, []string{}},
		{"combined", store.AgentFilter{Site: "prod", Status: store.AgentOnline, Capability: "echo", Labels: map[string]string{"tier": "1"}, IDPrefix: "web"}, []string{"web-1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.Limit = 100
			got, err := s.ListAgents(ctx, tc.f)
			require.NoError(t, err)
			require.Equal(t, tc.want, ids(got))
		})
	}
	// Pagination with a filter.
	page, err := s.ListAgents(ctx, store.AgentFilter{Site: "lab", Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []string{"Web-3", "a_b"}, ids(page))
	page, err = s.ListAgents(ctx, store.AgentFilter{Site: "lab", Limit: 2, After: "a_b"})
	require.NoError(t, err)
	require.Equal(t, []string{"axb"}, ids(page))
}

func testTelemetrySeries(t *testing.T, s *store.Store) {
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	var samples []store.TelemetrySample
	// a1: one sample every 10 s for 2 minutes; cpu = i, mem = 100 - i; a
	// string metric that must be ignored.
	for i := range 12 {
		samples = append(samples, store.TelemetrySample{
			AgentID: "a1", TS: base.Add(time.Duration(i) * 10 * time.Second), ReceivedAt: base,
			Metrics: store.JSON(fmt.Sprintf(`{"cpu":%d,"mem":%d.5,"note":"x","nested":{"a":1}}`, i, 100-i)),
		})
	}
	// a2: other agent, same times, huge values: must not leak into a1's series.
	for i := range 12 {
		samples = append(samples, store.TelemetrySample{AgentID: "a2", TS: base.Add(time.Duration(i) * 10 * time.Second), ReceivedAt: base, Metrics: store.JSON(`{"cpu":1000}`)})
	}
	// a1: a sample just before and at the end of the range (excluded).
	samples = append(samples,
		store.TelemetrySample{AgentID: "a1", TS: base.Add(-time.Millisecond), ReceivedAt: base, Metrics: store.JSON(`{"cpu":999}`)},
		store.TelemetrySample{AgentID: "a1", TS: base.Add(2 * time.Minute), ReceivedAt: base, Metrics: store.JSON(`{"cpu":999}`)},
	)
	require.NoError(t, s.InsertTelemetry(ctx, samples))

	q := store.TelemetryQuery{AgentID: "a1", From: base, To: base.Add(2 * time.Minute), Step: time.Minute}
	require.Equal(t, int64(2), q.Buckets())
	pts, err := s.TelemetrySeries(ctx, q)
	require.NoError(t, err)
	// cpu 0..5 in bucket 0 (avg 2.5, max 5), 6..11 in bucket 1 (avg 8.5, max 11);
	// mem 100.5..95.5 (avg 98, max 100.5), 94.5..89.5 (avg 92, max 94.5).
	require.Equal(t, []store.TelemetryPoint{
		{Metric: "cpu", Bucket: 0, Avg: 2.5, Max: 5, Count: 6},
		{Metric: "cpu", Bucket: 1, Avg: 8.5, Max: 11, Count: 6},
		{Metric: "mem", Bucket: 0, Avg: 98, Max: 100.5, Count: 6},
		{Metric: "mem", Bucket: 1, Avg: 92, Max: 94.5, Count: 6},
	}, roundPoints(pts))

	// Only named metrics; buckets start at From, not at the epoch.
	q = store.TelemetryQuery{AgentID: "a1", From: base.Add(5 * time.Second), To: base.Add(65 * time.Second), Step: 30 * time.Second, Metrics: []string{"cpu", "absent"}}
	pts, err = s.TelemetrySeries(ctx, q)
	require.NoError(t, err)
	require.Equal(t, []store.TelemetryPoint{
		{Metric: "cpu", Bucket: 0, Avg: 2, Max: 3, Count: 3}, // ts 10, 20, 30
		{Metric: "cpu", Bucket: 1, Avg: 5, Max: 6, Count: 3}, // ts 40, 50, 60
	}, roundPoints(pts))

	// No data: no points.
	pts, err = s.TelemetrySeries(ctx, store.TelemetryQuery{AgentID: "nobody", From: base, To: base.Add(time.Hour), Step: time.Minute})
	require.NoError(t, err)
	require.Empty(t, pts)

	_, err = s.TelemetrySeries(ctx, store.TelemetryQuery{AgentID: "a1", From: base, To: base.Add(24 * time.Hour), Step: time.Second})
	require.ErrorIs(t, err, store.ErrTooManyBuckets)
	_, err = s.TelemetrySeries(ctx, store.TelemetryQuery{AgentID: "a1", From: base, To: base.Add(time.Hour), Step: time.Minute, Metrics: []string{`a"b`}})
	require.Error(t, err)
	_, err = s.TelemetrySeries(ctx, store.TelemetryQuery{AgentID: "a1", From: base, To: base, Step: time.Minute})
	require.Error(t, err)
}

func roundPoints(pts []store.TelemetryPoint) []store.TelemetryPoint {
	for i := range pts {
		pts[i].Avg = math.Round(pts[i].Avg*1e9) / 1e9
	}
	return pts
}

func newCommand(t *testing.T, s *store.Store, verb, by string, agents ...string) store.Command {
	t.Helper()
	cmd, _, err := s.CreateCommand(context.Background(), store.NewCommand{
		Verb: verb, Priority: store.PriorityNormal, Args: store.JSON(`{}`), Targeting: store.Targeting{AgentIDs: agents},
		TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: by, Audit: store.AuditEvent{Actor: by, Action: "command.create"},
	})
	require.NoError(t, err)
	return cmd
}

func commandIDs(cmds []store.Command) []string {
	out := []string{}
	for _, c := range cmds {
		out = append(out, c.ID)
	}
	return out
}

func testListCommands(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw1", "s1")
	Online(t, s, "a2", "gw1", "s2")
	c1 := newCommand(t, s, "echo", "alice", "a1")
	c2 := newCommand(t, s, "sleep", "bob", "a2")
	c3 := newCommand(t, s, "echo", "bob", "a1", "a2")
	_, err := s.CancelCommand(ctx, c2.ID, "bob", "r")
	require.NoError(t, err)

	all := []string{c3.ID, c2.ID, c1.ID} // newest first
	cases := []struct {
		name string
		f    store.CommandFilter
		want []string
	}{
		{"all", store.CommandFilter{}, all},
		{"status", store.CommandFilter{Status: store.CommandCancelled}, []string{c2.ID}},
		{"verb", store.CommandFilter{Verb: "echo"}, []string{c3.ID, c1.ID}},
		{"agent", store.CommandFilter{AgentID: "a2"}, []string{c3.ID, c2.ID}},
		{"created_by", store.CommandFilter{CreatedBy: "alice"}, []string{c1.ID}},
		{"from", store.CommandFilter{From: c2.CreatedAt}, []string{c3.ID, c2.ID}},
		{"to", store.CommandFilter{To: c2.CreatedAt}, []string{c1.ID}},
		{"from to", store.CommandFilter{From: c2.CreatedAt, To: c3.CreatedAt}, []string{c2.ID}},
		{"combined", store.CommandFilter{Verb: "echo", AgentID: "a2", CreatedBy: "bob"}, []string{c3.ID}},
		{"none", store.CommandFilter{Verb: "nothing"}, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, next, err := s.ListCommands(ctx, tc.f)
			require.NoError(t, err)
			require.Empty(t, next)
			require.Equal(t, tc.want, commandIDs(got))
		})
	}
	var seen []string
	cursor := ""
	for range 4 {
		page, next, err := s.ListCommands(ctx, store.CommandFilter{Page: store.Page{Limit: 2, Cursor: cursor}})
		require.NoError(t, err)
		seen = append(seen, commandIDs(page)...)
		if next == "" {
			break
		}
		cursor = next
	}
	require.Equal(t, all, seen)
	_, _, err = s.ListCommands(ctx, store.CommandFilter{Page: store.Page{Cursor: "!!"}})
	require.ErrorIs(t, err, store.ErrBadCursor)

	counts, err := s.ExecutionCounts(ctx, []string{c1.ID, c2.ID, c3.ID})
	require.NoError(t, err)
	require.Equal(t, map[string]map[string]int{
		c1.ID: {store.ExecQueued: 1}, c2.ID: {store.ExecCancelled: 1}, c3.ID: {store.ExecQueued: 2},
	}, counts)
}

func testServiceInstances(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	up := func(role, id string, seen time.Time, leader bool) {
		require.NoError(t, s.UpsertServiceInstance(ctx, store.ServiceInstance{Role: role, ID: id, Version: "v1", Hostname: "h", Leader: leader, StartedAt: now.Add(-time.Hour), LastSeenAt: seen}))
	}
	up(store.RoleGateway, "gw1", now.Add(-time.Minute), false)
	up(store.RoleGateway, "gw1", now, false) // refreshed
	up(store.RoleScheduler, "s1", now, true)
	up(store.RoleScheduler, "s2", now.Add(-time.Hour), false) // dead
	up(store.RoleAPIServer, "api1", now, false)
	got, err := s.ServiceInstancesSeen(ctx, now.Add(-30*time.Second))
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, []string{"agent-gateway/gw1", "api-server/api1", "scheduler/s1"}, []string{got[0].Role + "/" + got[0].ID, got[1].Role + "/" + got[1].ID, got[2].Role + "/" + got[2].ID})
	require.True(t, got[2].Leader)
	require.WithinDuration(t, now, got[0].LastSeenAt, time.Millisecond)
	require.Equal(t, "v1", got[0].Version)

	require.NoError(t, s.DeleteServiceInstance(ctx, store.RoleAPIServer, "api1"))
	n, err := s.DeleteServiceInstancesBefore(ctx, now.Add(-10*time.Minute))
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	got, err = s.ServiceInstancesSeen(ctx, now.Add(-24*time.Hour))
	require.NoError(t, err)
	require.Len(t, got, 2)

	register(t, s, "a1", "x", "gw1", []string{"echo"}, nil)
	register(t, s, "a2", "x", "gw1", []string{"echo"}, nil)
	register(t, s, "a3", "x", "gw2", []string{"echo"}, nil)
	_, err = s.MarkAgentOffline(ctx, "a3", "s-a3", time.Now())
	require.NoError(t, err)
	per, err := s.OnlineAgentsByGateway(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"gw1": 2}, per)

	newCommand(t, s, "echo", "t", "a1", "a2")
	_, _, err = s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Priority: store.PriorityHigh, Args: store.JSON(`{}`), Targeting: store.Targeting{AgentIDs: []string{"a1"}},
		TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
	require.NoError(t, err)
	depth, err := s.QueueDepth(ctx)
	require.NoError(t, err)
	require.Equal(t, map[store.Priority]int64{store.PriorityNormal: 2, store.PriorityHigh: 1}, depth)
}

func testActivity(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw1", "s1")
	Online(t, s, "a2", "gw1", "s2")
	Online(t, s, "a3", "gw1", "s3")
	_, err := s.MarkAgentOffline(ctx, "a3", "s3", time.Now())
	require.NoError(t, err)
	empty, err := s.Activity(ctx, time.Now())
	require.NoError(t, err)
	require.Equal(t, store.DispatchLatency{}, empty.Dispatch)
	require.Zero(t, empty.Finished5m)

	cmd := newCommand(t, s, "echo", "t", "a1", "a2")
	newCommand(t, s, "echo", "t", "a1")
	// Dispatch cmd's executions 2 s after their creation (the claim's clock).
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 2, AckTimeout: time.Minute, Now: cmd.CreatedAt.Add(2 * time.Second)}, routeAll("gw1"))
	require.NoError(t, err)
	require.Len(t, due, 2)
	_, rec, err := s.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: due[0].AgentID, Status: store.ExecSucceeded, FinishedAt: time.Now()})
	require.NoError(t, err)
	require.True(t, rec)

	a, err := s.Activity(ctx, time.Now().Add(5*time.Second))
	require.NoError(t, err)
	require.Equal(t, map[string]int64{store.AgentOnline: 2, store.AgentOffline: 1}, a.AgentsByStatus)
	require.Equal(t, map[string]int64{store.CommandQueued: 1, store.CommandRunning: 1}, a.CommandsByStatus)
	require.Equal(t, int64(1), a.Finished1m)
	require.Equal(t, int64(1), a.Finished5m)
	require.Equal(t, int64(2), a.Dispatch.Samples)
	require.InDelta(t, 2.0, a.Dispatch.P50, 0.1)
	require.InDelta(t, 2.0, a.Dispatch.P99, 0.1)

	later, err := s.Activity(ctx, time.Now().Add(2*time.Minute))
	require.NoError(t, err)
	require.Zero(t, later.Finished1m)
	require.Equal(t, int64(1), later.Finished5m)
}
