package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/testenv"
)

// The gateway's writes on Postgres, per batch as the gateway makes them:
//
//	VIWORKS_REQUIRE_SERVICES=1 go test -run '^$' -bench 'Ingest' -benchmem ./store/

// openBenchStore is a migrated store on a fresh Postgres database.
func openBenchStore(b *testing.B) *Store {
	b.Helper()
	ctx := context.Background()
	s, err := Open(ctx, Config{AuditKey: testenv.AuditKey, URL: testenv.Postgres(b)})
	require.NoError(b, err)
	b.Cleanup(func() { _ = s.Close() })
	_, err = s.Migrate(ctx)
	require.NoError(b, err)
	return s
}

func benchSessions(prefix string, n int) []AgentSession {
	as := make([]AgentSession, n)
	for i := range as {
		as[i] = AgentSession{ID: fmt.Sprintf("%s-%04d", prefix, i), Version: "1", Hostname: "h", OS: "linux", Arch: "amd64",
			Capabilities: []string{"echo"}, Labels: map[string]string{"rack": "r1"}, GatewayID: "gw-bench", SessionID: fmt.Sprint("s-", i), At: time.Now()}
	}
	return as
}

// BenchmarkIngestTelemetry writes 5,000-row batches (the bench's raw COPY
// size) through InsertTelemetry.
func BenchmarkIngestTelemetry(b *testing.B) {
	s := openBenchStore(b)
	ctx := context.Background()
	const rows = 5000
	metrics := JSON(`{"cpu_percent":12.5,"mem_percent":40.1,"load1":0.5,"net_rx_bytes":123456789}`)
	batch := make([]TelemetrySample, rows)
	now := time.Now().UTC()
	for i := range batch {
		batch[i] = TelemetrySample{AgentID: fmt.Sprintf("tel-%03d", i%500), TS: now.Add(time.Duration(i) * time.Millisecond), Metrics: metrics, ReceivedAt: now}
	}
	for b.Loop() {
		require.NoError(b, s.InsertTelemetry(ctx, batch))
	}
	b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkIngestMarkAgentsOnline upserts a batch of 500 HELLOs (the group
// commit's largest).
func BenchmarkIngestMarkAgentsOnline(b *testing.B) {
	s := openBenchStore(b)
	ctx := context.Background()
	as := benchSessions("hello", 500)
	for b.Loop() {
		require.NoError(b, s.MarkAgentsOnline(ctx, as))
	}
	b.ReportMetric(float64(len(as)*b.N)/b.Elapsed().Seconds(), "hellos/s")
}

// BenchmarkIngestCredentials looks 500 credentials up one by one and as one
// batch (the upgrades' group).
func BenchmarkIngestCredentials(b *testing.B) {
	s := openBenchStore(b)
	ctx := context.Background()
	hashes := make([]string, 500)
	for i := range hashes {
		hashes[i] = fmt.Sprintf("bench-hash-%04d", i)
		require.NoError(b, s.EnrollBootstrap(ctx, fmt.Sprintf("cred-%04d", i), hashes[i], 0, time.Now()))
	}
	b.Run("one-by-one", func(b *testing.B) {
		for b.Loop() {
			for _, h := range hashes {
				_, err := s.AgentForCredential(ctx, h)
				require.NoError(b, err)
			}
		}
	})
	b.Run("batched", func(b *testing.B) {
		for b.Loop() {
			ids, err := s.AgentsForCredentials(ctx, hashes)
			require.NoError(b, err)
			require.Equal(b, "cred-0499", ids[499])
		}
	})
}

// BenchmarkIngestResults records batches of 500 results (one command fanned
// out to 500 agents, dispatched) through RecordBatch; the fan-out is made
// outside the timer.
func BenchmarkIngestResults(b *testing.B) {
	s := openBenchStore(b)
	ctx := context.Background()
	as := benchSessions("res", 500)
	require.NoError(b, s.MarkAgentsOnline(ctx, as))
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	route := func(_ context.Context, agents []string) (map[string]string, error) {
		m := make(map[string]string, len(agents))
		for _, a := range agents {
			m[a] = "gw-bench"
		}
		return m, nil
	}
	var results int
	for b.Loop() {
		b.StopTimer()
		_, _, err := s.CreateCommand(ctx, NewCommand{
			Verb: "echo", Priority: PriorityNormal, Args: JSON(`{}`), Targeting: Targeting{AgentIDs: ids},
			TTLSeconds: 600, TimeoutSeconds: 600, CreatedBy: "bench", Audit: AuditEvent{Actor: "bench", Action: "command.create"},
		})
		require.NoError(b, err)
		due, _, err := s.ClaimDue(ctx, ClaimOptions{Limit: 1000, AckTimeout: time.Minute}, route)
		require.NoError(b, err)
		require.Len(b, due, len(ids))
		batch := Batch{Results: make([]Result, len(due))}
		now := time.Now()
		for i, d := range due {
			batch.Results[i] = Result{ExecutionID: d.ExecutionID, CommandID: d.CommandID, AgentID: d.AgentID, Status: ExecSucceeded,
				Output: "hello from the agent", StartedAt: now.Add(-time.Second), FinishedAt: now}
		}
		b.StartTimer()
		out, err := s.RecordBatch(ctx, batch)
		require.NoError(b, err)
		require.NoError(b, out.RefreshErr)
		for _, o := range out.Results {
			require.True(b, o.Recorded)
		}
		results += len(batch.Results)
	}
	b.ReportMetric(float64(results)/b.Elapsed().Seconds(), "results/s")
}
