package runner

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/viworks/backend-agent/e2e/cluster"
)

// persistedColumn is added to the bench database's telemetry table (never to
// the product's schema): Postgres stamps each row with the clock when it is
// written, so ingest lag is measured up to the row being in the table.
const persistedColumn = `ALTER TABLE telemetry ADD COLUMN bench_persisted_at timestamptz NOT NULL DEFAULT clock_timestamp()`

type telemetryResult struct {
	agents     int
	interval   time.Duration
	window     time.Duration
	offered    float64 // rows/s the agents sent in the window (rows with ts in it)
	persisted  float64 // rows/s written in the window (rows with bench_persisted_at in it)
	lagP50     time.Duration
	lagP99     time.Duration // persisted − sent (agent's ts)
	recvP99    time.Duration // received by the gateway − sent
	simCores   float64       // CPU of the agentsim processes during the window, in cores
	gwCores    float64       // CPU of the gateways during the window, in cores
	drainAfter time.Duration // time after the agents stopped until the last row was written
	profiles   []string
	shortOf    string // set when not every agent connected
	connected  int    // agents online when the window opened
	// stillArriving: rows were still being written 2 minutes after the agents stopped.
	stillArriving bool
}

// nominal is the rows/s the fleet would send if nothing held it back.
func (t telemetryResult) nominal() float64 {
	if t.interval <= 0 {
		return 0
	}
	return float64(t.agents) / t.interval.Seconds()
}

// telemetryFloor is the shortest telemetry interval the scenario uses: 20
// TELEMETRY frames/s per agent, with the heartbeats well under the gateway's
// default max_frames_per_second of 50 (bursts of 100).
const telemetryFloor = 50 * time.Millisecond

// telemetrySizing picks the fleet for the telemetry scenario so that it
// offers 60% of the raw COPY rate (above the 50% target): as few agents as
// that needs at telemetryFloor, at most maxAgents (then at the floor it
// offers less, and the scenario says so), and the interval that gives 60%
// (at most 1 s).
func telemetrySizing(copyRowsPS float64, maxAgents int) (int, time.Duration) {
	const ceiling = time.Second
	want := max(1, 0.6*copyRowsPS)
	agents := min(maxAgents, max(1, int(math.Ceil(want*telemetryFloor.Seconds()-1e-9))))
	interval := time.Duration(float64(agents) / want * float64(time.Second)).Round(time.Millisecond)
	return agents, min(max(interval, telemetryFloor), ceiling)
}

// telemetry runs n agents that send TELEMETRY every interval over the
// gateways, and measures for window how many rows the product persists per
// second and how long after sending they are in Postgres.
func telemetry(ctx context.Context, c *cluster.Cluster, s system, db *sql.DB, n int, interval, window time.Duration, progress func(string, ...any)) (telemetryResult, error) {
	res := telemetryResult{agents: n, interval: interval, window: window}
	// The agents hold their telemetry until all of their process are
	// connected, so that the fleet connects before the load starts.
	procs, err := startFleet(c, s.gateways, "tel-agentsim", "t-", n, "--telemetry-interval", interval.String(), "--telemetry-when-connected")
	if err != nil {
		return res, err
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopProcs(procs)
		}
	}
	defer stop()
	if err := s.waitFleet(ctx, "t-", n, 3*time.Minute); err != nil {
		// A fleet that cannot all connect under its own telemetry load is
		// measured as it stands.
		progress("telemetry: %v; measuring the agents that are connected", err)
		res.shortOf = err.Error()
	}
	time.Sleep(min(window/2, 3*time.Second)) // warm-up: every agent sending
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM agents WHERE status = 'online' AND starts_with(id, 't-')`).Scan(&res.connected); err != nil {
		return res, fmt.Errorf("telemetry: counting online agents: %w", err)
	}
	pids := func(ps []*cluster.Proc) []int {
		out := make([]int, len(ps))
		for i, p := range ps {
			out[i] = p.Cmd.Process.Pid
		}
		return out
	}
	simPids, gwPids := pids(procs), pids(s.gatewayProcs)
	sim0, gw0 := sumCPU(simPids), sumCPU(gwPids)
	wait := s.prof.capture(ctx, "telemetry", window, map[string]string{"gateway1": "http://" + s.gateways[0], "gateway2": "http://" + s.gateways[1]})
	t0 := time.Now()
	progress("telemetry: measuring %s", window)
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	t1 := time.Now()
	res.simCores = (sumCPU(simPids) - sim0).Seconds() / t1.Sub(t0).Seconds()
	res.gwCores = (sumCPU(gwPids) - gw0).Seconds() / t1.Sub(t0).Seconds()
	stop()
	stoppedAt := time.Now()
	res.profiles = wait()

	// Wait until the gateways have written what they hold: the count of rows
	// sent since the window opened is non-zero and unchanged for three polls
	// (a gateway that fell behind writes its backlog in long transactions).
	var last int64 = -1
	for stable := 0; stable < 3; {
		var cnt int64
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM telemetry WHERE ts >= $1`, t0).Scan(&cnt); err != nil {
			return res, fmt.Errorf("telemetry: counting rows: %w", err)
		}
		if cnt > 0 && cnt == last {
			stable++
		} else {
			stable = 0
		}
		last = cnt
		if time.Since(stoppedAt) > 2*time.Minute {
			res.stillArriving = true // measured as it stands: rows not written by now count as not persisted
			break
		}
		time.Sleep(time.Second)
	}
	var sent, written int64
	var p50, p99, recv99 sql.NullFloat64
	var lastWrite sql.NullTime
	err = db.QueryRowContext(ctx, `SELECT
  count(*) FILTER (WHERE ts >= $1 AND ts < $2),
  count(*) FILTER (WHERE bench_persisted_at >= $1 AND bench_persisted_at < $2),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM bench_persisted_at - ts)) FILTER (WHERE ts >= $1 AND ts < $2),
  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM bench_persisted_at - ts)) FILTER (WHERE ts >= $1 AND ts < $2),
  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - ts)) FILTER (WHERE ts >= $1 AND ts < $2),
  max(bench_persisted_at)
FROM telemetry WHERE agent_id LIKE 't-%' AND (ts >= $1 OR bench_persisted_at >= $1)`, t0, t1).Scan(&sent, &written, &p50, &p99, &recv99, &lastWrite)
	if err != nil {
		return res, fmt.Errorf("telemetry: reading the rows: %w", err)
	}
	secs := t1.Sub(t0).Seconds()
	res.offered, res.persisted = float64(sent)/secs, float64(written)/secs
	res.lagP50 = time.Duration(p50.Float64 * float64(time.Second))
	res.lagP99 = time.Duration(p99.Float64 * float64(time.Second))
	res.recvP99 = time.Duration(recv99.Float64 * float64(time.Second))
	if lastWrite.Valid {
		res.drainAfter = max(0, lastWrite.Time.Sub(stoppedAt))
	}
	if sent == 0 {
		return res, fmt.Errorf("telemetry: no rows sent in the window were persisted")
	}
	return res, nil
}

func sumCPU(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		t += procCPU(p)
	}
	return t
}
