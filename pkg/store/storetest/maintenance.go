package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func testMaintenance(t *testing.T, s *store.Store) {
	ctx := context.Background()
	lead, err := s.TryLead(ctx, "m")
	require.NoError(t, err)
	require.NotNil(t, lead)
	defer lead.Release(ctx)

	agentWith(t, s, "fresh", "x", nil, "echo")
	agentWith(t, s, "stale", "x", nil, "echo")
	old := time.Now().Add(-10 * time.Minute)
	require.NoError(t, s.TouchAgents(ctx, []store.HealthUpdate{{AgentID: "stale", Status: "healthy", At: old}}))
	stale, err := s.MarkStaleAgentsOffline(ctx, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.Equal(t, []store.StaleAgent{{ID: "stale", GatewayID: "gw"}}, stale)
	a, err := s.GetAgent(ctx, "fresh")
	require.NoError(t, err)
	require.Equal(t, store.AgentOnline, a.Status)

	var samples []store.TelemetrySample
	for i := range 30 {
		samples = append(samples, store.TelemetrySample{AgentID: "fresh", TS: time.Now().Add(-time.Duration(i) * 24 * time.Hour), Metrics: store.JSON(`{"cpu_percent":1}`), ReceivedAt: time.Now()})
	}
	require.NoError(t, s.InsertTelemetry(ctx, samples))
	n, err := s.DeleteTelemetryBefore(ctx, time.Now().Add(-7*24*time.Hour-time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, int64(22), n, "days 8..29 go")

	c, _, err := s.CreateCommand(ctx, newCmd("echo", store.Targeting{AgentIDs: []string{"fresh"}}))
	require.NoError(t, err)
	_, err = s.CancelCommand(ctx, c.ID, "t", "r")
	require.NoError(t, err)
	n, err = s.DeleteCommandsFinishedBefore(ctx, time.Now().Add(-time.Hour), 10)
	require.NoError(t, err)
	require.Zero(t, n, "finished just now")
	n, err = s.DeleteCommandsFinishedBefore(ctx, time.Now().Add(time.Hour), 10)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	_, _, err = s.GetCommand(ctx, c.ID)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func testSigningKeys(t *testing.T, s *store.Store) {
	ctx := context.Background()
	keys, err := s.SigningKeys(ctx)
	require.NoError(t, err)
	require.Empty(t, keys)
	require.NoError(t, s.RegisterSigningKey(ctx, "ed25519:old", "T0xE"))
	time.Sleep(5 * time.Millisecond)
	require.NoError(t, s.RegisterSigningKey(ctx, "ed25519:new", "TkVX"))
	keys, err = s.SigningKeys(ctx)
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Equal(t, "ed25519:new", keys[0].KeyID, "newest first")
	time.Sleep(5 * time.Millisecond)
	require.NoError(t, s.RegisterSigningKey(ctx, "ed25519:old", "T0xE"))
	keys, err = s.SigningKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, "ed25519:old", keys[0].KeyID, "registering again makes it the newest")
}
