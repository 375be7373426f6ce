package runner

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
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
		copyPS     float64
		max, want  int
		wantPeriod time.Duration
	}{
		{133000, 6000, 3990, 50 * time.Millisecond}, // 79.8k rows/s: 60% of COPY at the floor
		{300000, 6000, 6000, 50 * time.Millisecond}, // capped: offers 120k of the 180k wanted
		{100000, 1000, 1000, 50 * time.Millisecond}, // the quick run's cap
		{1000, 6000, 30, 50 * time.Millisecond},     // a slow COPY: few agents
		{10, 6000, 1, 167 * time.Millisecond},       // one agent, slower than the floor
	} {
		n, interval := telemetrySizing(tc.copyPS, tc.max)
		require.Equal(t, tc.want, n, "COPY %v rows/s", tc.copyPS)
		require.Equal(t, tc.wantPeriod, interval, "COPY %v rows/s", tc.copyPS)
		require.GreaterOrEqual(t, interval, telemetryFloor, "the frame limit is respected")
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
		connected          int
		want               string
	}{
		{"above half of COPY", 60, 70, 10, "yes"},
		{"falls behind a sufficient offer", 30, 70, 10, "NO"},
		{"small offer is a failure, not n/a", 20, 20, 10, "NO: offered only 20 of 50 rows/s"},
		{"not every agent connected", 60, 70, 9, "NO: only 9 of 10 agents connected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, telemetryMet(telemetryResult{agents: 10, connected: tc.connected, persisted: tc.persisted, offered: tc.offered}, 100))
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
	}{{"x_total", 7}, {"x_seconds_sum", 1.5}, {"x_seconds_count", 3}, {"missing", 0}, {`x_total{reason="b"`, 5}, {`x_total{reason="c"`, 0}} {
		got, err := s.metric(srv.URL, tc.name)
		require.NoError(t, err)
		require.InDelta(t, tc.want, got, 1e-9, tc.name)
	}
}

func TestGrowthSizesAndChunks(t *testing.T) {
	for _, tc := range []struct {
		conn          int
		sizes, chunks []int
	}{
		{19000, []int{1000, 5000, 10000, 19000}, []int{1000, 4000, 5000, 9000}},
		{500, []int{26, 131, 263, 500}, []int{26, 105, 132, 237}},
		{10, []int{2, 5, 10}, []int{2, 3, 5}}, // 10/19 rounds to 0: sizes stay increasing
		{38000, []int{2000, 10000, 20000, 38000}, []int{2000, 8000, 9500, 500, 9500, 8500}},
	} {
		sizes := growthSizes(tc.conn)
		require.Equal(t, tc.sizes, sizes, "sizes of %d", tc.conn)
		got := chunks(sizes)
		require.Equal(t, tc.chunks, got, "chunks of %d", tc.conn)
		sum := 0
		for _, c := range got {
			require.LessOrEqual(t, c, perProcess)
			sum += c
		}
		require.Equal(t, tc.conn, sum)
		for i := range sizes {
			// Keeping the first len(chunks(sizes[:i+1])) processes leaves sizes[i] agents.
			kept := 0
			for _, c := range got[:len(chunks(sizes[:i+1]))] {
				kept += c
			}
			require.Equal(t, sizes[i], kept)
		}
	}
}

func TestChunkRate(t *testing.T) {
	var sum float64
	for _, n := range []int{1000, 4000, 5000, 9000} {
		r := chunkRate(n, 19000)
		require.InDelta(t, 19000.0/10000, float64(n)/r, 1e-9, "every chunk finishes starting after 1.9 s")
		sum += r
	}
	require.InDelta(t, 10000, sum, 1e-9, "together what two processes of startFleet offer")
}

func TestUsageMinusIdleAndSpread(t *testing.T) {
	idle := usage{wall: 10 * time.Second, cpu: map[string]time.Duration{"gateway-1": time.Second, "scheduler": 100 * time.Millisecond}, pgWrites: 1000, redisOps: 50}
	fan := usage{wall: 2 * time.Second, cpu: map[string]time.Duration{"gateway-1": 500 * time.Millisecond, "scheduler": 10 * time.Millisecond}, pgWrites: 4200, redisOps: 5}
	got := fan.minus(idle)
	require.Equal(t, 300*time.Millisecond, got.cpu["gateway-1"], "a fifth of the idle second removed")
	require.Equal(t, time.Duration(0), got.cpu["scheduler"], "never below zero")
	require.InDelta(t, 4000, got.pgWrites, 1e-9)
	require.InDelta(t, 0, got.redisOps, 1e-9)
	require.Equal(t, 300*time.Millisecond, got.gatewayCPU())
	require.Equal(t, 300*time.Millisecond, got.total())

	points := []growthPoint{
		{agents: 1000, exec: usage{cpu: map[string]time.Duration{"scheduler": 100 * time.Millisecond}}},
		{agents: 19000, exec: usage{cpu: map[string]time.Duration{"scheduler": 2850 * time.Millisecond}}},
	}
	require.InDelta(t, 100, points[0].perExec(), 1e-9)
	require.InDelta(t, 150, points[1].perExec(), 1e-9)
	require.InDelta(t, 1.5, spread(points, growthPoint.perExec), 1e-9)
	require.Zero(t, spread(points[:1], growthPoint.perExec), "one size has no spread")

	rows := growthRows(points, nil)
	require.Len(t, rows, 4)
	require.Equal(t, "yes", rows[2].Met)
	require.Equal(t, "1.50×", rows[2].Ratio)
	require.Equal(t, "NO", rows[3].Met, "no idle costs measured: not met")
	rows = growthRows(points, []int{5000})
	require.Equal(t, "NO: 5000 agents not all connected", rows[2].Met, "a size left out is a failure row")

	require.InDelta(t, 20, heartbeatUS(usage{cpu: map[string]time.Duration{"gateway-1": 5 * time.Millisecond, "api-server": time.Second}, heartbeat: 100, telemetry: 100}, 30), 1e-9)
}

func TestRedisCommands(t *testing.T) {
	require.InDelta(t, 12345, redisCommands("# Stats\r\ntotal_connections_received:9\r\ntotal_commands_processed:12345\r\n"), 1e-9)
	require.Zero(t, redisCommands("# Stats\r\n"))
}

func TestServiceCPUReadsThisProcess(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // burn a little CPU
	}
	require.Greater(t, serviceCPU(os.Getpid()), 10*time.Millisecond)
	require.Equal(t, time.Duration(0), serviceCPU(-1))
}

func TestArrivalIsAConstantRate(t *testing.T) {
	require.Equal(t, time.Duration(0), arrival(0, 1000))
	require.Equal(t, time.Millisecond, arrival(1, 1000))
	require.Equal(t, time.Second, arrival(2500, 2500))
	require.Equal(t, 400*time.Microsecond, arrival(1, 2500))
}

func TestOpenLoopClassifiesAnswers(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 4 {
		case 0:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			_, _ = w.Write([]byte(`{"items":[]}`))
		}
	}))
	defer srv.Close()
	res, err := openLoop(context.Background(), srv.URL, http.Header{}, 200, time.Second)
	require.NoError(t, err)
	require.Equal(t, int64(200), res.planned)
	require.Equal(t, res.planned, res.sent)
	require.True(t, res.offered(), "200 req/s is within the generator's reach")
	require.Equal(t, int64(50), res.ok)
	require.Equal(t, int64(50), res.shedRA)
	require.Equal(t, int64(50), res.shed)
	require.Equal(t, int64(50), res.other)
	require.Equal(t, map[int]int64{http.StatusTooManyRequests: 50}, res.otherCodes)
	require.InDelta(t, 50, res.goodput, 1e-9)

	rows := overloadRows(overloadResult{rate: 100, dur: time.Second, planned: 100, sent: 60, notSent: 40})
	require.Len(t, rows, 1)
	require.Equal(t, "NO: offered only 60 of 100", rows[0].Met, "a generator that cannot offer the load fails the scenario")
	rows = overloadRows(overloadResult{capacity: 100, rate: 200, dur: time.Second, planned: 200, sent: 200, ok: 95, goodput: 95, okP99: 40 * time.Millisecond})
	require.Equal(t, "yes", rows[0].Met)
	require.Equal(t, "yes", rows[1].Met)
}

func TestStormAndScaleOutRows(t *testing.T) {
	rows := stormRows(stormResult{agents: 100, reached: 100, complete: true, online: 4 * time.Second})
	require.Equal(t, "yes", rows[0].Met)
	require.Contains(t, rows[1].Figure, "25 agents/s")
	rows = stormRows(stormResult{agents: 100, reached: 90, online: stormTimeout})
	require.Equal(t, "NO: 90 of 100 reconnected", rows[0].Met)

	require.Equal(t, "yes", scaleOutRows(scaleOutResult{throughput: 950, single: 1000})[0].Met)
	require.Equal(t, "NO", scaleOutRows(scaleOutResult{throughput: 850, single: 1000})[0].Met)
	require.Equal(t, "NO", scaleOutRows(scaleOutResult{})[0].Met)
}

func TestCapacityModel(t *testing.T) {
	u := unitCosts{
		agentCPU:   map[string]float64{"gateway": 60, "scheduler": 0},
		sessionKiB: 8, pgPerAgent: 2, redisPerAgent: 1, reconnectPS: 2000,
		execCPU: map[string]float64{"scheduler": 100, "gateway": 50}, pgPerExec: 3, redisPerExec: 0.5, execPS: 5000,
	}
	a := defaultAssumptions
	f := fleetModel(u, a, 1_000_000)
	// 33,333 agent-intervals/s × 60 µs = 2 cores of gateway.
	require.InDelta(t, 2.0, f.cores["gateway"], 1e-9)
	require.InDelta(t, 2.0, f.totalCores, 1e-9)
	require.Equal(t, 50, f.gatewayPods, "20,000 sessions per pod bound it, not CPU (2 cores / 1.2 per pod) or memory")
	require.InDelta(t, 1_000_000*8.0/1024+50*64, f.gatewayMemMiB, 1e-6)
	require.InDelta(t, 66666.67, f.pgWritesPS, 0.01)
	require.InDelta(t, 33333.33, f.redisOpsPS, 0.01)
	require.InDelta(t, 10, f.reconnectAllSec, 1e-9, "1M agents over 50 pods at 2,000/s each")

	withIdle := u
	withIdle.gatewayIdle = 0.01
	require.InDelta(t, 2.5, fleetModel(withIdle, a, 1_000_000).totalCores, 1e-9, "50 pods' background of 0.01 cores each")

	cpuBound := fleetModel(unitCosts{agentCPU: map[string]float64{"gateway": 6000}, sessionKiB: 8}, a, 100_000)
	require.Equal(t, 17, cpuBound.gatewayPods, "20 cores at 1.2 per pod")

	fo := fanOutModel(u, 1_000_000)
	require.InDelta(t, 100, fo.coreSeconds["scheduler"], 1e-9)
	require.InDelta(t, 50, fo.coreSeconds["gateway"], 1e-9)
	require.InDelta(t, 3_000_000, fo.pgWrites, 1e-9)
	require.InDelta(t, 200, fo.oneSchedSec, 1e-9)

	var buf bytes.Buffer
	writeCapacity(&buf, u, a, true)
	out := buf.String()
	require.Contains(t, out, "QUICK run")
	for _, n := range []string{"| 10000 ", "| 100000 ", "| 1000000 "} {
		require.Contains(t, out, n)
	}
	require.Contains(t, out, "one fan-out to 1000000 agents")
}

func TestUnitCostsFromTheLargestFleet(t *testing.T) {
	m := measured{
		baseline: usage{wall: time.Second, cpu: map[string]time.Duration{"gateway-1": 10 * time.Millisecond}},
		tel:      telemetryResult{gwCores: 0.5, persisted: 10000},
		growth: []growthPoint{
			{agents: 10, idle: usage{heartbeat: 10, cpu: map[string]time.Duration{"gateway-1": time.Second}}},
			{agents: 1000, fan: fanOutResult{durable: 2 * time.Second},
				idle: usage{heartbeat: 1000, pgWrites: 2000, cpu: map[string]time.Duration{"gateway-1": 50 * time.Millisecond, "gateway-2": 10 * time.Millisecond, "scheduler": 5 * time.Millisecond}},
				exec: usage{pgWrites: 3000, cpu: map[string]time.Duration{"gateway-1": 100 * time.Millisecond, "gateway-2": 100 * time.Millisecond}}},
		},
	}
	u := m.unitCosts()
	require.Equal(t, 1000, u.measuredAgents)
	require.InDelta(t, 60, u.agentCPU["gateway"], 1e-9, "both gateways' processes are the gateway tier")
	require.InDelta(t, 5, u.agentCPU["scheduler"], 1e-9)
	require.InDelta(t, 200, u.execCPU["gateway"], 1e-9)
	require.InDelta(t, 2, u.pgPerAgent, 1e-9)
	require.InDelta(t, 3, u.pgPerExec, 1e-9)
	require.InDelta(t, 500, u.execPS, 1e-9)
	require.InDelta(t, 50, u.gwRowUS, 1e-9)
	require.InDelta(t, 0.01, u.gatewayIdle, 1e-9)
}
