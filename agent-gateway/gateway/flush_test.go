package gateway

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
)

// A gateway whose database does not take telemetry holds at most its bound,
// shedding the oldest a batch at a time (counted), and the graceful stop's
// flush writes exactly what it holds: the newest samples.
func TestTelemetryBoundShedsOldestAndStopFlushes(t *testing.T) {
	ctx := context.Background()
	st := migratedStore(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	mem := bus.NewMemory()
	// Not run: no flusher takes samples, as when Postgres cannot keep up.
	g, err := New(st, mem, mem, prometheus.NewRegistry(), log, Config{GatewayID: "gw-test", TelemetryBatch: 1000})
	require.NoError(t, err)
	bound := g.cfg.telemetryBound()
	require.Equal(t, minTelemetryBound, bound)

	const extra = 2500
	base := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	for i := range bound + extra {
		raw, _ := json.Marshal(map[string]int{"seq": i})
		g.addTelemetry(store.TelemetrySample{AgentID: "tel-1", TS: base.Add(time.Duration(i) * time.Millisecond), Metrics: raw, ReceivedAt: base})
	}
	// Reaching the bound sheds one batch (1,000): at samples 100,001, 101,001 and 102,001.
	const shed = 3000
	require.Equal(t, float64(shed), testutil.ToFloat64(g.metrics.telemetryShed))
	require.Len(t, g.tel.rows, bound+extra-shed)

	g.flush(ctx) // Shutdown's last write
	require.Equal(t, float64(bound+extra-shed), testutil.ToFloat64(g.metrics.telemetryStored))
	require.Empty(t, g.tel.rows)
	pts, err := st.TelemetrySeries(ctx, store.TelemetryQuery{AgentID: "tel-1", From: base, To: base.Add(200 * time.Second), Step: 200 * time.Second})
	require.NoError(t, err)
	require.Len(t, pts, 1)
	// The samples kept are seq 3,000 to 102,499: the oldest were shed.
	require.Equal(t, int64(bound+extra-shed), pts[0].Count)
	require.Equal(t, float64(bound+extra-1), pts[0].Max)
	require.InDelta(t, float64(shed+bound+extra-1)/2, pts[0].Avg, 1e-6)
}
