package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func testInsertTelemetry(t *testing.T, s *store.Store) {
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	var samples []store.TelemetrySample
	for i := range 1200 { // more than one multi-row insert chunk
		agent := fmt.Sprintf("t-%d", i%3)
		samples = append(samples, store.TelemetrySample{
			AgentID: agent, TS: base.Add(time.Duration(i) * time.Second),
			Metrics:    store.JSON(fmt.Sprintf(`{"cpu_percent":%d.5,"mem_percent":1}`, i)),
			ReceivedAt: base.Add(time.Hour),
		})
	}
	require.NoError(t, s.InsertTelemetry(ctx, samples))
	require.NoError(t, s.InsertTelemetry(ctx, nil))

	got, err := s.RecentTelemetry(ctx, "t-2", 2)
	require.NoError(t, err)
	require.Len(t, got, 2)
	last := samples[1199]
	require.Equal(t, "t-2", got[0].AgentID)
	require.True(t, last.TS.Equal(got[0].TS), "ts %s, want %s", got[0].TS, last.TS)
	require.True(t, last.ReceivedAt.Equal(got[0].ReceivedAt))
	var m map[string]float64
	require.NoError(t, json.Unmarshal(got[0].Metrics, &m))
	require.Equal(t, map[string]float64{"cpu_percent": 1199.5, "mem_percent": 1}, m)
	require.True(t, samples[1196].TS.Equal(got[1].TS))

	all, err := s.RecentTelemetry(ctx, "t-0", 1000)
	require.NoError(t, err)
	require.Len(t, all, 400)
}

func testMarkAgentsOnline(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	require.NoError(t, s.MarkAgentsOnline(ctx, nil))
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "o-1", Hostname: "old", GatewayID: "gw0", SessionID: "s0", At: now.Add(-time.Hour)}))
	// o-1 twice in one batch (a reconnect within one group commit): the later session wins.
	require.NoError(t, s.MarkAgentsOnline(ctx, []store.AgentSession{
		{ID: "o-1", Hostname: "h1", Labels: map[string]string{"env": "a"}, GatewayID: "gw1", SessionID: "s2", At: now.Add(time.Second)},
		{ID: "o-2", Hostname: "h2", Capabilities: []string{"echo"}, GatewayID: "gw1", SessionID: "s3", At: now},
		{ID: "o-1", Hostname: "h1-earlier", GatewayID: "gw1", SessionID: "s1", At: now},
	}))
	a, err := s.GetAgent(ctx, "o-1")
	require.NoError(t, err)
	require.Equal(t, store.AgentOnline, a.Status)
	require.Equal(t, "s2", a.SessionID)
	require.Equal(t, "h1", a.Hostname)
	require.Equal(t, "gw1", a.GatewayID)
	require.Equal(t, map[string]string{"env": "a"}, map[string]string(a.ReportedLabels))
	b, err := s.GetAgent(ctx, "o-2")
	require.NoError(t, err)
	require.Equal(t, []string{"echo"}, []string(b.Capabilities))
	require.Equal(t, "s3", b.SessionID)
}

func testRecordAudits(t *testing.T, s *store.Store) {
	ctx := context.Background()
	require.NoError(t, s.RecordAudits(ctx, nil))
	var es []store.AuditEvent
	for i := range 3 {
		es = append(es, store.AuditEvent{Actor: "agent:a", Action: "agent.enroll", Target: fmt.Sprintf("a-%d", i)})
	}
	es = append(es, store.AuditEvent{Actor: "agent:b", Action: "agent.enroll.denied", Target: "b", Details: store.JSON(`{"client":"10.0.0.1"}`)})
	require.NoError(t, s.RecordAudits(ctx, es))
	n, err := s.CountAudit(ctx, "agent.enroll")
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	n, err = s.CountAudit(ctx, "agent.enroll.denied")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	// A batch joins the hash chain like single appends do, before and after it.
	require.NoError(t, s.RecordAudit(ctx, store.AuditEvent{Actor: "admin", Action: "api_key.create", Target: "k"}))
	require.NoError(t, s.RecordAudits(ctx, es[:2]))
	v, err := s.VerifyAudit(ctx, nil)
	require.NoError(t, err)
	require.True(t, v.OK, "%+v", v)
	require.Equal(t, int64(7), v.Checked)
}
