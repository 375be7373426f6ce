package runner

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// growthSizes are the fleet sizes of the growth scenario for a connections
// fleet of n agents: 1,000 / 5,000 / 10,000 / 19,000 of 19,000, the same
// fractions of a smaller fleet.
func growthSizes(n int) []int {
	fr := []int{1, 5, 10, 19}
	out := make([]int, 0, len(fr))
	for _, f := range fr {
		if s := n * f / 19; s > 0 && (len(out) == 0 || s > out[len(out)-1]) {
			out = append(out, s)
		}
	}
	return out
}

// chunks is what each agentsim process of the connections fleet holds, so
// that stopping the last processes leaves exactly the next smaller size:
// the differences between the sizes, each split at perProcess.
func chunks(sizes []int) []int {
	var out []int
	prev := 0
	for _, s := range sizes {
		for d := s - prev; d > 0; d -= perProcess {
			out = append(out, min(d, perProcess))
		}
		prev = s
	}
	return out
}

// usage is what the services and Postgres/Redis did over a window.
type usage struct {
	wall      time.Duration
	cpu       map[string]time.Duration // by service
	heartbeat float64                  // HEARTBEAT frames received (gateway metrics)
	telemetry float64                  // TELEMETRY frames received
	pgWrites  float64                  // rows inserted + updated + deleted in the bench database
	pgCommits float64
	redisOps  float64 // commands Redis processed (the whole server: other users of it count too)
}

// sampler reads the counters a usage is the difference of.
type sampler struct {
	sys  system
	db   *sql.DB
	rdb  *redis.Client
	pids map[string]int
}

func (r *run) sampler() sampler {
	pids := map[string]int{"scheduler": r.sys.schedulerProcs[0].Cmd.Process.Pid, "api-server": r.sys.apiProc.Cmd.Process.Pid}
	for i, p := range r.sys.gatewayProcs {
		pids[fmt.Sprintf("gateway-%d", i+1)] = p.Cmd.Process.Pid
	}
	return sampler{sys: r.sys, db: r.db, rdb: r.rdb, pids: pids}
}

type reading struct {
	at                    time.Time
	cpu                   map[string]time.Duration
	hb, tel               float64
	writes, commits, rops float64
}

func (s sampler) read(ctx context.Context) (reading, error) {
	rd := reading{at: time.Now(), cpu: map[string]time.Duration{}}
	for name, pid := range s.pids {
		rd.cpu[name] = serviceCPU(pid)
	}
	for _, gw := range s.sys.gateways {
		hb, err := s.sys.metric("http://"+gw, `viworks_gateway_frames_received_total{type="HEARTBEAT"`)
		if err != nil {
			return rd, err
		}
		tel, err := s.sys.metric("http://"+gw, `viworks_gateway_frames_received_total{type="TELEMETRY"`)
		if err != nil {
			return rd, err
		}
		rd.hb, rd.tel = rd.hb+hb, rd.tel+tel
	}
	if err := s.db.QueryRowContext(ctx, `SELECT tup_inserted + tup_updated + tup_deleted, xact_commit FROM pg_stat_database WHERE datname = current_database()`).
		Scan(&rd.writes, &rd.commits); err != nil {
		return rd, fmt.Errorf("reading pg_stat_database: %w", err)
	}
	info, err := s.rdb.Info(ctx, "stats").Result()
	if err != nil {
		return rd, fmt.Errorf("reading Redis stats: %w", err)
	}
	rd.rops = redisCommands(info)
	return rd, nil
}

// over reads the counters, waits d and reads them again.
func (s sampler) over(ctx context.Context, d time.Duration) (from, to reading, err error) {
	if from, err = s.read(ctx); err != nil {
		return from, to, err
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return from, to, ctx.Err()
	}
	to, err = s.read(ctx)
	return from, to, err
}

// redisCommands is total_commands_processed from INFO stats.
func redisCommands(info string) float64 {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// since is the usage between two readings. pg_stat_database lags a commit by
// up to the stats flush (a second): the windows are long enough for that.
func (a reading) since(b reading) usage {
	u := usage{wall: a.at.Sub(b.at), cpu: map[string]time.Duration{}, heartbeat: a.hb - b.hb, telemetry: a.tel - b.tel,
		pgWrites: a.writes - b.writes, pgCommits: a.commits - b.commits, redisOps: a.rops - b.rops}
	for k, v := range a.cpu {
		u.cpu[k] = v - b.cpu[k]
	}
	return u
}

// minus removes what idle would have done over u's wall time (the background
// of heartbeats and telemetry under a fan-out), never going below zero.
func (u usage) minus(idle usage) usage {
	if idle.wall <= 0 {
		return u
	}
	f := u.wall.Seconds() / idle.wall.Seconds()
	out := usage{wall: u.wall, cpu: map[string]time.Duration{}, heartbeat: u.heartbeat, telemetry: u.telemetry,
		pgWrites: max(0, u.pgWrites-f*idle.pgWrites), pgCommits: max(0, u.pgCommits-f*idle.pgCommits), redisOps: max(0, u.redisOps-f*idle.redisOps)}
	for k, v := range u.cpu {
		out.cpu[k] = max(0, v-time.Duration(f*float64(idle.cpu[k])))
	}
	return out
}

// gatewayCPU is the CPU of every gateway process in u.
func (u usage) gatewayCPU() time.Duration {
	var t time.Duration
	for k, v := range u.cpu {
		if strings.HasPrefix(k, "gateway-") {
			t += v
		}
	}
	return t
}

// total is the CPU of every service in u.
func (u usage) total() time.Duration {
	var t time.Duration
	for _, v := range u.cpu {
		t += v
	}
	return t
}

// growthPoint is one fleet size of the growth scenario.
type growthPoint struct {
	agents int
	idle   usage        // the idle window (heartbeats and telemetry) less the services' background without agents
	fan    fanOutResult // one command to every agent
	exec   usage        // the fan-out's window, the idle background removed
	// pgSettled: exec's Postgres counts waited pgStatsSettle for the
	// counters (only the largest size; the others' are not printed).
	pgSettled bool
}

// pgStatsSettle is how long Postgres may take to publish a backend's
// pg_stat_database counters (PGSTAT_IDLE_INTERVAL, 10 s), plus a margin.
const pgStatsSettle = 11 * time.Second

func perUnit(d time.Duration, n float64) float64 {
	if n <= 0 {
		return 0
	}
	return float64(d.Microseconds()) / n
}

// idlePerAgent is the services' CPU µs per agent-interval: per heartbeat
// received (each agent also sends one telemetry row per interval at the
// seed's intervals, counted in the same window).
func (g growthPoint) idlePerAgent() float64 { return perUnit(g.idle.total(), g.idle.heartbeat) }

// perExec is the services' CPU µs per execution of the fan-out.
func (g growthPoint) perExec() float64 { return perUnit(g.exec.total(), float64(g.agents)) }

// execPS is the fan-out's executions per second.
func (g growthPoint) execPS() float64 {
	if g.fan.durable <= 0 {
		return 0
	}
	return float64(g.agents) / g.fan.durable.Seconds()
}

// spread is the largest over the smallest of f across the points (0 without two).
func spread(points []growthPoint, f func(growthPoint) float64) float64 {
	lo, hi := 0.0, 0.0
	for i, p := range points {
		v := f(p)
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	if len(points) < 2 || lo <= 0 {
		return 0
	}
	return hi / lo
}

// growthIdle is the idle measuring window at each size: one whole heartbeat
// interval, so that every agent heartbeats about once in it whatever the
// phase of its sessions (agents that reconnected together heartbeat
// together).
func growthIdle(quick bool) time.Duration { return fleetInterval(quick) }

// fleetInterval is the connections fleet's heartbeat and telemetry interval:
// the seed's 30 s, or 3 s in the quick run (so its idle windows stay short).
func fleetInterval(quick bool) time.Duration {
	if quick {
		return 3 * time.Second
	}
	return 30 * time.Second
}

// baseline measures the services with no agent connected for one idle
// window: their background (timers, GC, metrics), taken out of the growth
// scenario's idle windows so that the per-agent costs are what agents add.
func (r *run) baseline(ctx context.Context, m *measured) error {
	a, b, err := r.sampler().over(ctx, growthIdle(r.cfg.Quick))
	if err != nil {
		return err
	}
	m.baseline = b.since(a)
	r.progress("baseline: services' CPU without agents over %s: %s", ms(m.baseline.wall), durList(m.baseline.cpu))
	return nil
}

func durList(m map[string]time.Duration) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %s", k, ms(m[k])))
	}
	return strings.Join(parts, ", ")
}

// growth runs on the connections fleet, largest size first: an idle window,
// then one command to every connected agent; then the last agentsim
// processes are stopped down to the next smaller size.
func (r *run) growth(ctx context.Context, m *measured) error {
	defer func() { stopProcs(r.connFleet); r.connFleet = nil }()
	sizes := growthSizes(r.cfg.ConnAgents)
	s := r.sampler()
	procs := r.connFleet
	for i := len(sizes) - 1; i >= 0; i-- {
		n := sizes[i]
		keep := len(chunks(sizes[:i+1]))
		stopProcs(procs[keep:])
		procs = procs[:keep]
		if err := r.sys.waitSessions(ctx, 0, n, 2*time.Minute, r.progress); err != nil {
			// A size whose agents are not all connected is left out: a
			// failure row instead of its figures.
			r.progress("growth: %v; %d agents left out", err, n)
			m.growthSkipped = append(m.growthSkipped, n)
			continue
		}
		if err := r.sys.waitFleet(ctx, "c-", n, time.Minute); err != nil {
			return fmt.Errorf("growth: %w", err)
		}
		time.Sleep(time.Second) // the disconnects' offline writes settle
		pt := growthPoint{agents: n}
		r.progress("growth: %d agents connected; idle window %s", n, growthIdle(r.cfg.Quick))
		a, b, err := s.over(ctx, growthIdle(r.cfg.Quick))
		if err != nil {
			return err
		}
		idle := b.since(a)
		pt.idle = idle.minus(m.baseline)
		if pt.fan, err = fanOut(ctx, r.sys, r.db, "c-", n); err != nil {
			return fmt.Errorf("growth: %w", err)
		}
		c, err := s.read(ctx)
		if err != nil {
			return err
		}
		pt.exec = c.since(b).minus(idle)
		if i == len(sizes)-1 {
			// Postgres 15 publishes a backend's counters up to 10 s after its
			// last transaction: wait them out before counting the fan-out's
			// writes (the capacity model's; the smaller sizes skip the wait).
			time.Sleep(pgStatsSettle)
			d, err := s.read(ctx)
			if err != nil {
				return err
			}
			settled := d.since(b).minus(idle)
			pt.exec.pgWrites, pt.exec.pgCommits, pt.pgSettled = settled.pgWrites, settled.pgCommits, true
		}
		r.progress("growth: %d agents: fan-out %.2f s (%.0f executions/s), %.0f µs CPU per execution, %.0f µs per agent-interval idle",
			n, pt.fan.durable.Seconds(), pt.execPS(), pt.perExec(), pt.idlePerAgent())
		m.growth = append([]growthPoint{pt}, m.growth...)
	}
	return nil
}

// growthRows are the growth scenario's rows: the spread between the largest
// and the smallest size of the per-execution and per-agent costs.
func growthRows(points []growthPoint, skipped []int) []Row {
	if len(points) == 0 {
		return nil
	}
	lo, hi := points[0], points[len(points)-1]
	var rows []Row
	for _, p := range points {
		rows = append(rows, Row{"growth", fmt.Sprintf("%d agents: fan-out %.2f s, %.0f executions/s, %.0f µs CPU/execution, %.0f µs CPU/agent-interval",
			p.agents, p.fan.durable.Seconds(), p.execPS(), p.perExec(), p.idlePerAgent()), "", "", "", ""})
	}
	for _, n := range skipped {
		rows = append(rows, Row{"growth", fmt.Sprintf("%d agents: not all connected (see the progress lines)", n), "", "", "", fmt.Sprintf("NO: %d agents not all connected", n)})
	}
	pe, pa := spread(points, growthPoint.perExec), spread(points, growthPoint.idlePerAgent)
	rows = append(rows,
		Row{"growth", fmt.Sprintf("CPU per execution, largest/smallest of %d…%d agents", lo.agents, hi.agents), "≤ 1.5×", "", fmt.Sprintf("%.2f×", pe), met(pe > 0 && pe <= 1.5)},
		Row{"growth", fmt.Sprintf("CPU per agent-interval idle, largest/smallest of %d…%d agents", lo.agents, hi.agents), "≤ 1.5×", "", fmt.Sprintf("%.2f×", pa), met(pa > 0 && pa <= 1.5)},
	)
	return rows
}

// writeGrowth writes each size's per-service costs.
func writeGrowth(w io.Writer, points []growthPoint, baseline usage, telRowUS float64, interval time.Duration) {
	if len(points) == 0 {
		return
	}
	fmt.Fprintf(w, "  growth:      the connections fleet on gateway 1, largest size first (agentsim processes stopped down to each size); per size an idle window of one\n"+
		"               interval (heartbeat + telemetry every %s per agent; CPU µs per agent-interval = CPU / heartbeats received), then echo commands to all (one per 10,000 agents, the API's bound);\n"+
		"               CPU from /proc/<pid>/task/*/schedstat (ns) of each service; the idle windows less the services' CPU without agents (baseline %s: %s),\n"+
		"               the fan-out's window less the idle window's rate:\n", interval, ms(baseline.wall), durList(baseline.cpu))
	for _, p := range points {
		fmt.Fprintf(w, "               %6d agents: fan-out POST %s, durable %s; per execution µs:", p.agents, ms(p.fan.post), ms(p.fan.durable))
		for _, k := range sortedKeys(p.exec.cpu) {
			fmt.Fprintf(w, " %s %.0f", k, perUnit(p.exec.cpu[k], float64(p.agents)))
		}
		if p.pgSettled {
			fmt.Fprintf(w, "; PG rows written %.2f (counted %s after the fan-out)", p.exec.pgWrites/float64(p.agents), pgStatsSettle)
		}
		fmt.Fprintf(w, "; Redis ops %.2f\n", p.exec.redisOps/float64(p.agents))
		fmt.Fprintf(w, "                             idle %s: %.0f heartbeats, %.0f telemetry rows; per heartbeat µs:", ms(p.idle.wall), p.idle.heartbeat, p.idle.telemetry)
		for _, k := range sortedKeys(p.idle.cpu) {
			fmt.Fprintf(w, " %s %.0f", k, perUnit(p.idle.cpu[k], p.idle.heartbeat))
		}
		fmt.Fprintf(w, "; gateways per heartbeat without the telemetry row (%.0f µs/row from the telemetry scenario) %.0f", telRowUS, heartbeatUS(p.idle, telRowUS))
		fmt.Fprintf(w, "; PG writes %.2f, commits %.2f, Redis ops %.2f per heartbeat\n", perCount(p.idle.pgWrites, p.idle.heartbeat), perCount(p.idle.pgCommits, p.idle.heartbeat), perCount(p.idle.redisOps, p.idle.heartbeat))
	}
}

// heartbeatUS is the gateways' CPU µs per heartbeat in an idle window once
// the telemetry rows of the same window are taken out at telRowUS each.
func heartbeatUS(idle usage, telRowUS float64) float64 {
	if idle.heartbeat <= 0 {
		return 0
	}
	return max(0, (float64(idle.gatewayCPU().Microseconds())-idle.telemetry*telRowUS)/idle.heartbeat)
}

func perCount(v, n float64) float64 {
	if n <= 0 {
		return 0
	}
	return v / n
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// serviceCPU is a process's CPU time summed over its threads from
// /proc/<pid>/task/*/schedstat (nanoseconds; Go's threads live as long as
// the process), or from /proc/<pid>/stat (10 ms ticks) when that is missing.
func serviceCPU(pid int) time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return procCPU(pid)
	}
	var t time.Duration
	for _, path := range tasks {
		raw, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(raw)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			t += time.Duration(ns)
		}
	}
	return t
}
