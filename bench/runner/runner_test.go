package runner

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNiceAxis(t *testing.T) {
	for _, tc := range []struct {
		in, max, step float64
	}{
		{22, 25, 5},
		{8, 8, 1},
		{41, 50, 10},
		{130, 140, 20},
		{0.9, 1, 0.2},
	} {
		gotMax, gotStep := niceAxis(tc.in)
		require.InDelta(t, tc.max, gotMax, 1e-9, "max for %v", tc.in)
		require.InDelta(t, tc.step, gotStep, 1e-9, "step for %v", tc.in)
		require.GreaterOrEqual(t, gotMax, tc.in)
	}
}

func TestTelemetrySizing(t *testing.T) {
	for _, tc := range []struct {
		copyPS float64
		agents int
		want   time.Duration
	}{
		{100000, 2000, 33 * time.Millisecond},  // 60k rows/s from 2,000 agents
		{1000000, 2000, 25 * time.Millisecond}, // the floor: at most 40 frames/s per agent
		{100, 200, time.Second},                // the ceiling
	} {
		n, interval := telemetrySizing(tc.copyPS, tc.agents)
		require.Equal(t, tc.agents, n)
		require.Equal(t, tc.want, interval, "COPY %v rows/s, %d agents", tc.copyPS, tc.agents)
	}
}

func TestProcesses(t *testing.T) {
	for _, tc := range []struct{ n, gateways, want int }{
		{500, 1, 1}, {19000, 1, 2}, {10000, 2, 2}, {20000, 2, 4}, {1, 2, 1},
	} {
		require.Equal(t, tc.want, processes(tc.n, tc.gateways), "%d agents over %d gateways", tc.n, tc.gateways)
	}
}

func TestTelemetryMet(t *testing.T) {
	for _, tc := range []struct {
		name               string
		persisted, offered float64
		want               string
	}{
		{"above half of COPY", 60, 70, "yes"},
		{"falls behind a sufficient offer", 30, 70, "NO"},
		{"small fleet kept up with", 20, 20, "n/a: offered < 50%"},
		{"small fleet not kept up with", 10, 20, "NO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, telemetryMet(telemetryResult{persisted: tc.persisted, offered: tc.offered}, 100))
		})
	}
}

func TestLatencyChartIsAPNG(t *testing.T) {
	samples := make([]time.Duration, 0, 1000)
	for i := range 1000 {
		samples = append(samples, time.Duration(3000+i*7)*time.Microsecond)
	}
	samples = append(samples, 2*time.Second) // a straggler beyond the axis
	var buf bytes.Buffer
	require.NoError(t, latencyChart(&buf, samples, "test"))
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	require.Equal(t, 900, img.Bounds().Dx())
	require.Equal(t, 540, img.Bounds().Dy())

	require.Error(t, latencyChart(&buf, nil, "empty"))
}

func TestWriteTableAlignsColumns(t *testing.T) {
	var buf bytes.Buffer
	writeTable(&buf, []Row{{"api", "1 req/s", "≥ 50% of bare", "bare 2 req/s", "0.50×", "yes"}})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	for _, l := range lines {
		require.Equal(t, len([]rune(lines[0])), len([]rune(l)))
	}
	require.Contains(t, lines[0], "limit measured in this run")
}

func TestRunLoadCountsRequestsAndCPU(t *testing.T) {
	body := []byte(`{"items":[]}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer x" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	res, err := runLoad(context.Background(), srv.URL, http.Header{"Authorization": {"Bearer x"}}, os.Getpid(), 2, 300*time.Millisecond)
	require.NoError(t, err)
	require.Greater(t, res.reqPS, 0.0)
	require.Greater(t, res.p99, time.Duration(0))
	require.GreaterOrEqual(t, res.p99, res.p50)

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer failing.Close()
	_, err = runLoad(context.Background(), failing.URL, http.Header{}, os.Getpid(), 2, 200*time.Millisecond)
	require.ErrorContains(t, err, "status 500")
}

func TestProcCPUReadsThisProcess(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // burn a little CPU
	}
	require.Greater(t, procCPU(os.Getpid()), time.Duration(0))
	require.Equal(t, time.Duration(0), procCPU(-1))
	require.Greater(t, selfCPU(), time.Duration(0))
}

func TestServeBareRejectsMissingFlags(t *testing.T) {
	require.ErrorContains(t, ServeBare(nil), "--port and --body are required")
	require.ErrorContains(t, ServeBare([]string{"--port", "1", "--body", "/nonexistent/body"}), "reading body")
}

func TestMetricSumsLabelSetsOfOneName(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("# HELP x_seconds help\nx_seconds_sum 1.5\nx_seconds_count 3\nx_total{reason=\"a\"} 2\nx_total{reason=\"b\"} 5\nx_totally 100\n"))
	}))
	defer srv.Close()
	s := system{client: srv.Client()}
	for _, tc := range []struct {
		name string
		want float64
	}{{"x_total", 7}, {"x_seconds_sum", 1.5}, {"x_seconds_count", 3}, {"missing", 0}} {
		got, err := s.metric(srv.URL, tc.name)
		require.NoError(t, err)
		require.InDelta(t, tc.want, got, 1e-9, tc.name)
	}
}
