package runner

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// rows are the result table: each figure beside its target and baseline.
func (m measured) rows(cfg Config) []Row {
	conn, fan, tel, api, limits, tput := m.conn, m.fan, m.tel, m.api, m.limits, m.throughput
	p50, p99 := percentile(m.lat, 0.5), percentile(m.lat, 0.99)
	base := limits.RedisRTT + limits.PGCommit
	rows := []Row{
		{"connections", fmt.Sprintf("%.1f KiB RSS per idle session at %d", conn.perSessionKiB, cfg.ConnAgents), "≤ 8 KiB", "", "", met(conn.perSessionKiB <= 8)},
		{"connections", fmt.Sprintf("%.0f agents/s connect (enroll + upgrade + HELLO)", conn.rate), "≥ 2,000 agents/s", fmt.Sprintf("PG single-row INSERT %.0f tx/s", limits.PGInsertTPS), ratio(conn.rate, limits.PGInsertTPS), met(conn.rate >= 2000)},
		{"latency", "p50 " + ms(p50), "≤ 5 ms", "Redis RTT + PG commit " + ms(base), ratio(float64(p50), float64(base)), met(p50 <= 5*time.Millisecond)},
		{"latency", "p99 " + ms(p99), "≤ 20 ms", "", "", met(p99 <= 20*time.Millisecond)},
		{"fan-out", fmt.Sprintf("%.2f s POST → %d results durable", fan.durable.Seconds(), fan.agents), "≤ 1 s", "", "", met(fan.durable <= time.Second)},
		{"throughput", fmt.Sprintf("%.0f executions/s", tput), "≥ 5,000/s", fmt.Sprintf("PG single-row INSERT %.0f tx/s", limits.PGInsertTPS), ratio(tput, limits.PGInsertTPS), met(tput >= 5000)},
		{"telemetry", fmt.Sprintf("%.0f rows/s persisted (%.0f/s offered of %.0f/s nominal)", tel.persisted, tel.offered, tel.nominal()), "≥ 50% of raw COPY", fmt.Sprintf("COPY %.0f rows/s", limits.CopyRowsPS), ratio(tel.persisted, limits.CopyRowsPS), telemetryMet(tel, limits.CopyRowsPS)},
		{"telemetry", "p99 ingest lag " + ms(tel.lagP99) + " (sent → in table)", "", "", "", ""},
		{"api", fmt.Sprintf("%.0f req/s GET /agents?limit=100, %d agents", api.real.reqPS, api.agents), "≥ 50% of bare", fmt.Sprintf("bare gin, same bytes %.0f req/s", api.bare.reqPS), ratio(api.real.reqPS, api.bare.reqPS), met(api.real.reqPS >= 0.5*api.bare.reqPS)},
	}
	rows = append(rows, overloadRows(m.overload)...)
	rows = append(rows, stormRows(m.storm)...)
	rows = append(rows, growthRows(m.growth, m.growthSkipped)...)
	return append(rows, scaleOutRows(m.scale)...)
}

// writeScenarios writes how each scenario was configured and the limits
// measured, the text above the table.
func (m measured) writeScenarios(w io.Writer, cfg Config, gateways int) {
	fan, tel, api, limits := m.fan, m.tel, m.api, m.limits
	fmt.Fprintf(w, "service configuration (TOML, on top of the defaults, every scenario):\n%s\n", indent(serviceConfig))
	fmt.Fprintf(w, "configuration per scenario:\n")
	fmt.Fprintf(w, "  connections: %d idle agentsim agents on one gateway (heartbeat and telemetry every %s), in agentsim processes of %v (at most %d each), starting 10,000 agents/s together;\n"+
		"               the gateway's CPU over the burst %.0f µs per connect\n", cfg.ConnAgents, fleetInterval(cfg.Quick), chunks(growthSizes(cfg.ConnAgents)), perProcess, float64(m.conn.cpuPerConnect.Nanoseconds())/1000)
	st := m.storm
	fmt.Fprintf(w, "  reconnect:   the connections fleet, then gateway 1 restarted: SIGTERM (it closes its sessions with 1012 spread over drain_seconds, 10 s by default) — gone after %s —,\n"+
		"               a new process on the same port ready %s after it started; figure = new gateway ready → its sessions gauge at %d (%d reached);\n"+
		"               agents reconnect as real SDK agents do: full jitter, a uniform random delay in [0, min(reconnect_backoff_ms 1 s doubled per failed attempt since\n"+
		"               the last WELCOME (max_reconnect_attempts 5), the SDK's 30 s cap)]; agentsim adds no delay of its own (its --connect-rate paces only the first start)\n",
		ms(st.drain), ms(st.startup), st.agents, st.reached)
	writeGrowth(w, m.growth, m.baseline, m.unitCosts().gwRowUS, fleetInterval(cfg.Quick))
	fmt.Fprintf(w, "  latency:     %d sequential echo commands, one target each, over %d connected agents on one gateway; result seen via the scheduler wake (after commit)\n", cfg.LatencyN, cfg.Agents)
	fmt.Fprintf(w, "  fan-out:     one echo command to %d agents, %d per gateway over %d gateways, in %d agentsim processes; figure = last execution's updated_at (terminal) − POST sent;\n"+
		"               POST answered %s, last dispatch %s; scheduler: %d claim-route-publish rounds (dispatch_batch_size above) averaging %s\n",
		fan.agents, fan.agents/gateways, gateways, processes(cfg.FanOutAgents, gateways), ms(fan.post), ms(fan.allDispatched), fan.rounds, ms(fan.roundAvg))
	fmt.Fprintf(w, "               Postgres during the fan-out (pg_stat_activity every 20 ms, mean active sessions by wait | query):\n")
	for _, l := range fan.pgTop {
		fmt.Fprintf(w, "                 %s\n", l)
	}
	fmt.Fprintf(w, "  throughput:  %s, commands of %d targets, 8 commands in flight, %d agents on one gateway, one scheduler\n", cfg.Throughput, cfg.FanOut, cfg.Agents)
	fmt.Fprintf(w, "  scale-out:   the same run with a second scheduler process and %d new agents split over both gateways: %.0f executions/s (1 + 1: %.0f/s)\n", m.scale.agents, m.scale.throughput, m.scale.single)
	fmt.Fprintf(w, "  telemetry:   %d agents sending every %s over %d gateways (sized to offer 60%% of the COPY limit at intervals of at least %s, at most %d agents; nominal %.0f rows/s),\n"+
		"               %d of them online when the window opened, telemetry held until each agentsim process's agents were all connected; measured for %s after warm-up;\n"+
		"               lag = bench_persisted_at (clock_timestamp() default on a bench-only column) − agent ts: p50 %s, p99 %s; gateway received_at − ts p99 %s;\n"+
		"               CPU during the window: agentsim %.2f cores, gateways %.2f cores; last row written %s after the agents stopped\n",
		tel.agents, tel.interval, gateways, telemetryFloor, cfg.TelemetryMax, tel.nominal(), tel.connected, tel.window, ms(tel.lagP50), ms(tel.lagP99), ms(tel.recvP99), tel.simCores, tel.gwCores, ms(tel.drainAfter))
	if tel.shortOf != "" {
		fmt.Fprintf(w, "               not every agent connected under the telemetry load: %s\n", tel.shortOf)
	}
	if tel.stillArriving {
		fmt.Fprintf(w, "               rows were still being written 2 minutes after the agents stopped: the gateways had fallen behind\n")
	}
	fmt.Fprintf(w, "  api:         %d agents inserted directly into the database; %d keep-alive connections, %s per server after a warm-up, response %d bytes;\n"+
		"               the same Go load generator (this process, GOMAXPROCS=%d) for both, its own CPU counted per request:\n"+
		"               real API:  %s\n               bare gin:  %s\n",
		api.agents, api.concurrency, api.dur, api.bodyBytes, runtime.GOMAXPROCS(0), api.real, api.bare)
	o := m.overload
	fmt.Fprintf(w, "  overload:    open loop (each request on its own schedule, start + i/rate, like vegeta) at 2× the real API's req/s above = %.0f req/s for %s, client timeout %s,\n"+
		"               at most %d in flight; %d of %d sent, start lag p99 %s, last %s late; 2xx %d (latency from the scheduled start: p99 %s), 503 + Retry-After %d, 503 without %d,\n"+
		"               other %d %v, client timeouts %d, connection errors %d\n",
		o.rate, o.dur, overloadTimeout, overloadMaxInFlight, o.sent, o.planned, ms(o.lagP99), ms(o.endLag), o.ok, ms(o.okP99), o.shedRA, o.shed, o.other, o.otherCodes, o.timeouts, o.errs)
	fmt.Fprintf(w, "\nlimits measured in this run: Redis (%s) PING p50 %s, PUBLISH %.0f/s one client", limits.RedisTool, ms(limits.RedisRTT), limits.RedisPublishPS)
	if limits.RedisPublishPS50 > 0 {
		fmt.Fprintf(w, ", %.0f/s 50 clients", limits.RedisPublishPS50)
	}
	fmt.Fprintf(w, "; Postgres single-row INSERT commit p50 %s, %.0f tx/s (one client); COPY into telemetry %.0f rows/s (pgx CopyFrom, %d rows in COPYs of %d, one connection)\n\n",
		ms(limits.PGCommit), limits.PGInsertTPS, limits.CopyRowsPS, limits.CopyRows, copyBatch)
	writeCapacity(w, m.unitCosts(), defaultAssumptions, cfg.Quick)
	fmt.Fprintf(w, "time per scenario:")
	var total time.Duration
	for _, e := range m.elapsed {
		fmt.Fprintf(w, " %s %.0f s;", e.name, e.d.Seconds())
		total += e.d
	}
	fmt.Fprintf(w, " total %.0f s (without building and set-up)\n\n", total.Seconds())
}

// report prints the table and, with OutDir, writes it and the latency chart.
func (r *run) report(out io.Writer, m measured) error {
	var table bytes.Buffer
	m.writeScenarios(&table, r.cfg, len(r.sys.gateways))
	writeTable(&table, m.rows(r.cfg))
	if _, err := out.Write(table.Bytes()); err != nil {
		return err
	}
	if r.cfg.OutDir == "" {
		return nil
	}
	if err := os.MkdirAll(r.cfg.OutDir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	name := filepath.Join(r.cfg.OutDir, "results-"+stamp+".txt")
	if err := os.WriteFile(name, table.Bytes(), 0o644); err != nil {
		return err
	}
	r.progress("wrote %s", name)
	var chart bytes.Buffer
	if err := latencyChart(&chart, m.lat, fmt.Sprintf("latency: POST -> succeeded, %d sequential single-target commands (cumulative)", len(m.lat))); err != nil {
		return err
	}
	name = filepath.Join(r.cfg.OutDir, "latency-"+stamp+".png")
	if err := os.WriteFile(name, chart.Bytes(), 0o644); err != nil {
		return err
	}
	r.progress("wrote %s", name)
	return nil
}
