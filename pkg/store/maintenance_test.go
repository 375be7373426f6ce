package store_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func TestLeaderHandOver(t *testing.T) {
	ctx := context.Background()
	url := testenv.Postgres(t)
	open := func() *store.Store {
		s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
		require.NoError(t, err)
		return s
	}
	a, b := open(), open()
	defer b.Close()

	la, err := a.TryLead(ctx, "maintenance")
	require.NoError(t, err)
	require.NotNil(t, la)
	require.NoError(t, la.Check(ctx))
	lb, err := b.TryLead(ctx, "maintenance")
	require.NoError(t, err)
	require.Nil(t, lb, "one leader at a time")
	other, err := b.TryLead(ctx, "another-role")
	require.NoError(t, err)
	require.NotNil(t, other, "names are independent")
	other.Release(ctx)

	// The leader's connection dies (as when its process is killed): the lease passes on.
	admin, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return la.Check(ctx) != nil }, 5*time.Second, 20*time.Millisecond, "the old leader notices")
	defer a.Close()
	require.Eventually(t, func() bool {
		lb, err = b.TryLead(ctx, "maintenance")
		return err == nil && lb != nil
	}, 10*time.Second, 50*time.Millisecond)
	lb.Release(ctx)
}

func TestMaintenance(t *testing.T) { each(t, testMaintenance) }

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

func TestSigningKeys(t *testing.T) { each(t, testSigningKeys) }

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
