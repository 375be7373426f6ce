package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkTelemetrySeries30Days downsamples 30 days of per-minute samples
// (43,200 rows of the simulator's nine metrics) of one agent among nine other
// agents' rows (interleaved in the heap, as gateways write them) on
// Postgres, and logs the plan of the all-metrics query.
//
//	go test -run '^$' -bench TelemetrySeries30Days -benchtime 10x ./store/
func BenchmarkTelemetrySeries30Days(b *testing.B) {
	ctx := context.Background()
	s := openBenchStore(b)
	var err error
	end := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	start := end.Add(-30 * 24 * time.Hour)
	// Ten agents, one sample a minute each for 30 days: 432,000 rows.
	err = s.db.Exec(`INSERT INTO telemetry (agent_id, ts, metrics, received_at)
SELECT 'agent-' || a, ts, jsonb_build_object(
  'cpu_percent', round((random() * 100)::numeric, 2), 'mem_percent', round((random() * 100)::numeric, 2),
  'mem_used_bytes', floor(random() * 8e9), 'disk_percent', round((random() * 100)::numeric, 2),
  'load1', round((random() * 4)::numeric, 2), 'load5', round((random() * 4)::numeric, 2), 'load15', round((random() * 4)::numeric, 2),
  'net_rx_bytes', floor(random() * 1e12), 'net_tx_bytes', floor(random() * 1e12)), ts
FROM generate_series(0, 9) AS a, generate_series(?::timestamptz, ?::timestamptz - interval '1 minute', interval '1 minute') AS ts
ORDER BY ts, a`, start, end).Error
	require.NoError(b, err)
	require.NoError(b, s.db.Exec(`ANALYZE telemetry`).Error)

	var plan []string
	sql, args := postgresDialect{}.seriesSQL(nil, start, int64(3*3600))
	args = append(args, "agent-3", start, end, MaxTelemetryPoints+1)
	require.NoError(b, s.db.Raw(`EXPLAIN (ANALYZE, BUFFERS) `+sql, args...).Scan(&plan).Error)
	b.Logf("plan of the all-metrics query at a 3h step:\n%s", strings.Join(plan, "\n"))

	cases := []struct {
		name    string
		step    time.Duration
		metrics []string
	}{
		{"all-metrics-step-3h", 3 * time.Hour, nil},
		{"all-metrics-step-5m", 5 * time.Minute, nil},
		{"one-metric-step-3h", 3 * time.Hour, []string{"cpu_percent"}},
		{"two-metrics-step-5m", 5 * time.Minute, []string{"cpu_percent", "mem_percent"}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			q := TelemetryQuery{AgentID: "agent-3", From: start, To: end, Step: tc.step, Metrics: tc.metrics}
			var pts []TelemetryPoint
			for b.Loop() {
				pts, err = s.TelemetrySeries(ctx, q)
				require.NoError(b, err)
			}
			var samples int64
			for _, p := range pts {
				if p.Metric == "cpu_percent" {
					samples += p.Count
				}
			}
			require.Equal(b, int64(43_200), samples, "every sample of the agent is counted once")
			b.ReportMetric(float64(len(pts)), "points")
		})
	}
}
