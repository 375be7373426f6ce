package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// BenchmarkFanOut1000 on Postgres: creating a command to 1,000 online agents
// (POST /commands' store work) and claiming its 1,000 executions in one
// dispatch round, with nothing in flight and, in the tenth round of ten such
// commands, with 9,000 in flight (a round's cost must not grow with the work
// already dispatched); between iterations (not timed) the executions finish.
//
//	VIWORKS_REQUIRE_SERVICES=1 go test -run '^$' -bench FanOut1000 -benchmem ./store/
func BenchmarkFanOut1000(b *testing.B) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: storetest.MigratedPostgres(b)})
	require.NoError(b, err)
	b.Cleanup(func() { _ = s.Close() })
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("agent-%04d", i)
		require.NoError(b, s.MarkAgentOnline(ctx, store.AgentSession{
			ID: ids[i], Site: "lab", Capabilities: []string{"echo"}, GatewayID: fmt.Sprintf("gw-%d", i%2), SessionID: "s-" + ids[i], At: time.Now(),
		}))
	}
	route := func(_ context.Context, agents []string) (map[string]string, error) {
		m := make(map[string]string, len(agents))
		for _, id := range agents {
			m[id] = "gw-" + id[len(id)-1:]
		}
		return m, nil
	}
	create := func() {
		_, _, err := s.CreateCommand(ctx, store.NewCommand{
			Verb: "echo", Args: store.JSON(`{"message":"hello fleet"}`), CreatedBy: "bench", TimeoutSeconds: 60, TTLSeconds: 3600,
			Targeting: store.Targeting{AgentIDs: ids}, Audit: store.AuditEvent{Actor: "bench", Action: "command.create"},
		})
		require.NoError(b, err)
	}
	claim := func() {
		due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 1000, MaxInFlight: 100_000, PerAgent: 64}, route)
		require.NoError(b, err)
		require.Len(b, due, 1000)
	}
	finish := func() {
		require.NoError(b, s.ExecRawForTest(ctx, `UPDATE executions SET status = 'succeeded', finished_at = now() WHERE finished_at IS NULL`))
	}
	b.Run("create", func(b *testing.B) {
		for b.Loop() {
			create()
			b.StopTimer()
			claim()
			finish()
			b.StartTimer()
		}
	})
	// Autovacuum analyzes after a bulk insert: the planner then believes
	// nothing is in flight while a fan-out's rounds fill it.
	for _, analyzed := range []bool{false, true} {
		b.Run(fmt.Sprintf("claim-9000-in-flight-analyzed=%v", analyzed), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				for range 10 {
					create()
				}
				if analyzed {
					require.NoError(b, s.ExecRawForTest(ctx, `ANALYZE executions`))
				}
				for range 9 {
					claim()
				}
				b.StartTimer()
				claim()
				b.StopTimer()
				finish()
				b.StartTimer()
			}
		})
	}
	b.Run("claim", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			create()
			b.StartTimer()
			claim()
			b.StopTimer()
			finish()
			b.StartTimer()
		}
	})
}
