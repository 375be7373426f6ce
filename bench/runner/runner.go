// Package runner is `make bench`: it starts the real services on loopback
// (Postgres, Redis, scheduler, api-server, agent-gateway, simulated agents),
// runs each scenario, and prints every figure beside its target and the raw
// limits of this machine measured in the same run.
package runner

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/redis/go-redis/v9"

	"github.com/viworks/backend-agent/e2e/cluster"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/signing"
)

// Config sizes the run.
type Config struct {
	Root         string // repository root
	OutDir       string // where the result table and chart are written
	Quick        bool   // small sizes, for CI
	AdminDB      string // Postgres admin URL
	RedisURL     string
	LatencyN     int
	Agents       int
	Throughput   time.Duration
	FanOut       int // agents per command in the throughput scenario
	LimitSamples int
	ConnAgents   int // idle sessions held by one gateway in the connections scenario

	FanOutAgents   int           // agents of the one fan-out command, over two gateways
	TelemetryMax   int           // agents in the telemetry scenario
	TelemetryFor   time.Duration // telemetry measuring window
	CopyRows       int           // rows COPYed for the raw ingest limit
	APIAgents      int           // agents in the database for the api scenario
	APIConcurrency int           // load generator connections
	APIFor         time.Duration // per server
	Profile        bool          // services serve pprof; CPU profiles of the measuring windows go to OutDir
	FanOutOverride int           // > 0: FanOutAgents
}

// Defaults fills the sizes for a full or a quick run.
func (c *Config) Defaults() {
	if c.AdminDB == "" {
		c.AdminDB = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	if c.RedisURL == "" {
		c.RedisURL = "redis://127.0.0.1:6379/0"
	}
	conn := c.ConnAgents
	if c.Quick {
		c.LatencyN, c.Agents, c.Throughput, c.FanOut, c.LimitSamples, c.ConnAgents = 100, 100, 5*time.Second, 50, 200, 500
		c.FanOutAgents, c.TelemetryMax, c.TelemetryFor, c.CopyRows = 500, 1000, 4*time.Second, 20000
		c.APIAgents, c.APIConcurrency, c.APIFor = 10000, 8, 2*time.Second
	} else {
		c.LatencyN, c.Agents, c.Throughput, c.FanOut, c.LimitSamples, c.ConnAgents = 1000, 1000, 30*time.Second, 100, 2000, 19000
		c.FanOutAgents, c.TelemetryMax, c.TelemetryFor, c.CopyRows = 10000, 6000, 20*time.Second, 200000
		c.APIAgents, c.APIConcurrency, c.APIFor = 10000, 8, 10*time.Second
	}
	if conn > 0 {
		c.ConnAgents = conn
	}
	if c.FanOutOverride > 0 {
		c.FanOutAgents = c.FanOutOverride
	}
}

// serviceConfig is what a user at this scale would set (printed with the table).
const serviceConfig = `[command]
max_concurrent_commands = 100000
max_command_queue_size = 1000000
max_per_agent = 64
dispatch_batch_size = 1000

[agent_management]
max_agent_connections = 20000

[telemetry]
batch_size = 1000
flush_interval = 1
`

// Row is one line of the result table.
type Row struct {
	Scenario, Figure, Target, Limit, Ratio, Met string
}

// Run executes the benchmark and writes the table to out and OutDir.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	cfg.Defaults()
	began := time.Now()
	r := &run{cfg: cfg, progress: func(format string, a ...any) {
		fmt.Fprintf(out, "bench [%5.1fs]: "+format+"\n", append([]any{time.Since(began).Seconds()}, a...)...)
	}}
	defer r.close()
	if err := r.setUp(ctx); err != nil {
		return err
	}
	var m measured
	steps := []struct {
		name string
		step func(context.Context, *measured) error
	}{
		{"machine limits", r.machineLimits},
		{"api", r.api},
		{"overload", r.overload},
		{"baseline", r.baseline},
		{"connections", r.connections},
		{"reconnect storm", r.reconnectStorm},
		{"growth", r.growth},
		{"latency and throughput", r.commands},
		{"scale-out", r.scaleOut},
		{"fan-out", r.fanOut},
		{"telemetry", r.telemetry},
	}
	for _, st := range steps {
		t := time.Now()
		if err := st.step(ctx, &m); err != nil {
			return fmt.Errorf("bench %s: %w", st.name, err)
		}
		m.elapsed = append(m.elapsed, stepTime{st.name, time.Since(t)})
		r.progress("%s: done in %.1f s", st.name, time.Since(t).Seconds())
	}
	return r.report(out, m)
}

// run is one bench run: its configuration, the system it started and what
// to undo at the end.
type run struct {
	cfg       Config
	progress  func(format string, a ...any)
	c         *cluster.Cluster
	sys       system
	db        *sql.DB
	rdb       *redis.Client
	dbURL     string
	prefix    string // of every Redis key
	prof      profiler
	results   <-chan string   // command ids of durable results (the command scenarios)
	connFleet []*cluster.Proc // the connections fleet, kept for the reconnect storm and growth
	undo      []func()        // in reverse order by close
}

// stepTime is how long one scenario took.
type stepTime struct {
	name string
	d    time.Duration
}

// measured is what the scenarios found, for the report.
type measured struct {
	limits     Limits
	api        apiResult
	conn       connResult
	lat        []time.Duration
	throughput float64
	fan        fanOutResult
	tel        telemetryResult
	overload   overloadResult
	storm      stormResult
	baseline   usage         // the services without agents, one idle window
	growth     []growthPoint // smallest fleet first
	// growthSkipped are the growth sizes whose agents were not all connected.
	growthSkipped []int
	scale         scaleOutResult
	elapsed       []stepTime
}

// copyBatch is the rows per COPY of the raw ingest limit.
const copyBatch = 5000

func (r *run) onClose(f func()) { r.undo = append(r.undo, f) }

func (r *run) close() {
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
}

// report logs the profiles a scenario wrote.
func (r *run) reportProfiles(paths []string) {
	for _, p := range paths {
		r.progress("profile %s", p)
	}
}

// setUp builds the binaries, creates a private database and Redis prefix,
// and starts the scheduler, two gateways and the api-server.
func (r *run) setUp(ctx context.Context) error {
	cfg := r.cfg
	r.progress("building binaries")
	bin, err := cluster.Build(cfg.Root)
	if err != nil {
		return err
	}
	r.onClose(func() { os.RemoveAll(bin) })
	work, err := os.MkdirTemp("", "viworks-bench-")
	if err != nil {
		return err
	}
	r.onClose(func() { os.RemoveAll(work) })

	admin, err := sql.Open("pgx", cfg.AdminDB)
	if err != nil {
		return fmt.Errorf("opening postgres: %w", err)
	}
	r.onClose(func() { admin.Close() })
	dbName := fmt.Sprintf("viworks_bench_%d", time.Now().UnixNano())
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		return fmt.Errorf("creating database (is Postgres running on 127.0.0.1?): %w", err)
	}
	r.onClose(func() {
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)")
	})
	u, _ := url.Parse(cfg.AdminDB)
	u.Path = "/" + dbName
	r.dbURL = u.String()
	if r.db, err = sql.Open("pgx", r.dbURL); err != nil {
		return err
	}
	r.onClose(func() { r.db.Close() })

	ropts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return err
	}
	r.rdb = redis.NewClient(ropts)
	r.onClose(func() { r.rdb.Close() })

	r.prefix = fmt.Sprintf("viworks-bench-%d:", time.Now().UnixNano())
	keyPath := filepath.Join(work, "signing.key")
	if _, err := signing.GenerateKeyFile(keyPath); err != nil {
		return err
	}
	confPath := filepath.Join(work, "viworks.toml")
	if err := os.WriteFile(confPath, []byte(serviceConfig), 0o600); err != nil {
		return err
	}
	r.c = &cluster.Cluster{Bin: bin, Dir: work, Env: append(os.Environ(),
		"DATABASE_URL="+r.dbURL, "REDIS_URL="+cfg.RedisURL, "REDIS_KEY_PREFIX="+r.prefix,
		"BACKEND_PRIVATE_KEY_PATH="+keyPath, "JWT_SECRET=bench-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"-0123456789abcdef",
		"AUDIT_HMAC_KEY=bench-audit-"+strconv.FormatInt(time.Now().UnixNano(), 36)+"-0123456789abcdef",
		"AGENT_ENROLLMENT_SECRET=bench-enrollment-secret", "ARGS_ENCRYPTION_KEY="+strings.Repeat("ab", 32), "LOG_LEVEL=warn", "LOG_FORMAT=text",
		"RATE_LIMIT_REQUESTS=100000000", // the load comes from one address
	)}
	r.prof = profiler{stamp: time.Now().UTC().Format("20060102T150405Z")}
	if cfg.Profile {
		r.c.Env = append(r.c.Env, "VIWORKS_PPROF=1")
		r.prof.dir = cfg.OutDir
	}
	r.onClose(func() { r.c.StopAll(20 * time.Second) })

	r.progress("starting scheduler, two agent-gateways and api-server")
	if r.sys, err = start(r.c, confPath); err != nil {
		return err
	}
	r.sys.prof, r.sys.db = r.prof, r.db
	if _, err := r.db.ExecContext(ctx, persistedColumn); err != nil {
		return fmt.Errorf("adding the bench's persisted-at column: %w", err)
	}
	return nil
}

// machineLimits measures Redis and Postgres alone: the figures' baselines.
func (r *run) machineLimits(ctx context.Context, m *measured) error {
	cfg := r.cfg
	r.progress("measuring the limits of this machine (%d samples each, COPY of %d rows)", cfg.LimitSamples, cfg.CopyRows)
	var err error
	if m.limits, err = measureLimits(ctx, r.db, r.rdb, cfg.RedisURL, cfg.LimitSamples); err != nil {
		return err
	}
	if m.limits.CopyRowsPS, err = measureCopy(ctx, r.dbURL, cfg.CopyRows, copyBatch); err != nil {
		return err
	}
	m.limits.CopyRows = cfg.CopyRows
	return nil
}

// api is GET /agents against the real API and a bare gin server.
func (r *run) api(ctx context.Context, m *measured) error {
	r.progress("api: %d agents in the database, GET %s", r.cfg.APIAgents, apiPath)
	var err error
	if m.api, err = apiScenario(ctx, r.c, r.sys, r.db, r.cfg.APIAgents, r.cfg.APIConcurrency, r.cfg.APIFor, r.progress); err != nil {
		return err
	}
	r.reportProfiles(m.api.profiles)
	return nil
}

// connections connects idle agents to one gateway and keeps them for the
// reconnect storm and the growth scenario (which stops them).
func (r *run) connections(ctx context.Context, m *measured) error {
	r.progress("connections: %d idle agents on one gateway", r.cfg.ConnAgents)
	every := fleetInterval(r.cfg.Quick).String()
	conn, fleet, err := connect(ctx, r.c, r.sys, chunks(growthSizes(r.cfg.ConnAgents)), r.progress, "--heartbeat-interval", every, "--telemetry-interval", every)
	r.connFleet = fleet
	r.onClose(func() { stopProcs(r.connFleet) })
	if err != nil {
		return err
	}
	m.conn = conn
	return nil
}

// commands measures sequential single-target latency, then throughput, on
// one fleet on one gateway; every execution must succeed.
func (r *run) commands(ctx context.Context, m *measured) error {
	cfg, sys := r.cfg, r.sys
	fleet, err := startFleet(r.c, sys.gateways[:1], "agentsim", "b-", cfg.Agents)
	if err != nil {
		return err
	}
	if err := sys.waitFleet(ctx, "b-", cfg.Agents, 4*time.Minute); err != nil {
		return err
	}
	b, err := bus.NewRedis(ctx, bus.RedisConfig{URL: cfg.RedisURL, KeyPrefix: r.prefix})
	if err != nil {
		return err
	}
	r.onClose(func() { b.Close() })
	if r.results, err = subscribeResults(ctx, b); err != nil {
		return err
	}
	results := r.results

	r.progress("latency: %d sequential single-target commands", cfg.LatencyN)
	wait := r.prof.capture(ctx, "latency", 5*time.Second, map[string]string{"scheduler": sys.scheduler, "gateway": "http://" + sys.gateways[0], "api": sys.api})
	if m.lat, err = latency(ctx, sys, results, cfg.LatencyN, cfg.Agents); err != nil {
		return err
	}
	r.reportProfiles(wait())
	breakdown, err := latencyBreakdown(ctx, r.db)
	if err != nil {
		return err
	}
	r.progress("latency breakdown (medians, server clocks): %s", breakdown)
	r.progress("throughput: %s with %d agents, %d agents per command", cfg.Throughput, cfg.Agents, cfg.FanOut)
	wait = r.prof.capture(ctx, "throughput", cfg.Throughput, map[string]string{"scheduler": sys.scheduler, "gateway": "http://" + sys.gateways[0], "api": sys.api})
	if m.throughput, err = throughput(ctx, sys, results, "b-", cfg.Agents, cfg.FanOut, cfg.Throughput, r.progress); err != nil {
		return err
	}
	r.reportProfiles(wait())
	var unfinished int
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM executions WHERE status <> 'succeeded'`).Scan(&unfinished); err != nil {
		return err
	}
	if unfinished > 0 {
		return fmt.Errorf("%d executions did not succeed", unfinished)
	}
	stopProcs(fleet)
	return nil
}

// fanOut sends one command to a fleet spread over both gateways.
func (r *run) fanOut(ctx context.Context, m *measured) error {
	cfg, sys := r.cfg, r.sys
	r.progress("fan-out: %d agents over %d gateways", cfg.FanOutAgents, len(sys.gateways))
	fleet, err := startFleet(r.c, sys.gateways, "fan-agentsim", "f-", cfg.FanOutAgents)
	if err != nil {
		return err
	}
	if err := sys.waitFleet(ctx, "f-", cfg.FanOutAgents, 4*time.Minute); err != nil {
		return err
	}
	time.Sleep(time.Second) // the connect burst's heartbeats and garbage settle
	r.progress("fan-out: one command to all %d agents", cfg.FanOutAgents)
	wait := r.prof.capture(ctx, "fanout", fanOutProfile(cfg.Quick), map[string]string{"scheduler": sys.scheduler, "gateway1": "http://" + sys.gateways[0], "gateway2": "http://" + sys.gateways[1], "api": sys.api})
	roundsSum0, _ := sys.metric(sys.scheduler, "viworks_scheduler_dispatch_round_seconds_sum")
	rounds0, _ := sys.metric(sys.scheduler, "viworks_scheduler_dispatch_round_seconds_count")
	pgs := startPGSampler(ctx, r.db, 20*time.Millisecond)
	fan, err := fanOut(ctx, sys, r.db, "f-", cfg.FanOutAgents)
	fan.pgTop = pgs.Stop(6)
	if err != nil {
		return err
	}
	r.reportProfiles(wait())
	roundsSum1, _ := sys.metric(sys.scheduler, "viworks_scheduler_dispatch_round_seconds_sum")
	rounds1, _ := sys.metric(sys.scheduler, "viworks_scheduler_dispatch_round_seconds_count")
	if n := rounds1 - rounds0; n > 0 {
		fan.rounds, fan.roundAvg = int(n), time.Duration((roundsSum1-roundsSum0)/n*float64(time.Second))
	}
	r.progress("fan-out: POST answered after %s, last COMMAND dispatched after %s, last result durable after %s; %d dispatch rounds averaging %s",
		ms(fan.post), ms(fan.allDispatched), ms(fan.durable), fan.rounds, ms(fan.roundAvg))
	stopProcs(fleet)
	m.fan = fan
	return nil
}

// telemetry offers telemetry sized to the measured COPY rate.
func (r *run) telemetry(ctx context.Context, m *measured) error {
	telAgents, telInterval := telemetrySizing(m.limits.CopyRowsPS, r.cfg.TelemetryMax)
	r.progress("telemetry: %d agents sending every %s over %d gateways (offered %.0f rows/s)", telAgents, telInterval, len(r.sys.gateways), float64(telAgents)/telInterval.Seconds())
	var err error
	if m.tel, err = telemetry(ctx, r.c, r.sys, r.db, telAgents, telInterval, r.cfg.TelemetryFor, r.progress); err != nil {
		return err
	}
	r.reportProfiles(m.tel.profiles)
	return nil
}

// fanOutProfile is how long the fan-out's CPU profiles run: long enough to
// see the dispatch rounds of a slow fan-out.
func fanOutProfile(quick bool) time.Duration {
	if quick {
		return 3 * time.Second
	}
	return 15 * time.Second
}

// telemetryMet judges the telemetry row: the scenario fails when not every
// agent was connected or it offered less than the target needs (half the
// COPY rate).
func telemetryMet(t telemetryResult, copyRowsPS float64) string {
	need := 0.5 * copyRowsPS
	switch {
	case t.connected < t.agents:
		return fmt.Sprintf("NO: only %d of %d agents connected", t.connected, t.agents)
	case t.offered < need:
		return fmt.Sprintf("NO: offered only %.0f of %.0f rows/s", t.offered, need)
	case t.persisted >= need:
		return "yes"
	}
	return "NO"
}

// stopProcs stops processes together: SIGTERM to all, then each gets until a
// common deadline before it is killed.
func stopProcs(procs []*cluster.Proc) {
	for _, p := range procs {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range procs {
		select {
		case <-p.Done:
		case <-time.After(time.Until(deadline)):
			_ = p.Cmd.Process.Kill()
			<-p.Done
		}
	}
}

// latencyBreakdown splits the single-target commands' time by stage, from the
// timestamps the services recorded.
func latencyBreakdown(ctx context.Context, db *sql.DB) (string, error) {
	var create, dispatch, run, record float64
	err := db.QueryRowContext(ctx, `SELECT
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM e.dispatched_at - c.created_at)),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM e.started_at - e.dispatched_at)),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM e.finished_at - e.started_at)),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.finished_at - e.finished_at))
FROM commands c JOIN executions e ON e.command_id = c.id`).Scan(&create, &dispatch, &run, &record)
	if err != nil {
		return "", fmt.Errorf("latency breakdown: %w", err)
	}
	f := func(s float64) string { return fmt.Sprintf("%.2f ms", s*1000) }
	return fmt.Sprintf("created→dispatched %s, dispatched→agent started %s, agent run %s, agent finished→recorded %s",
		f(create), f(dispatch), f(run), f(record)), nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func ratio(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n  ") + "\n"
}

func writeTable(w io.Writer, rows []Row) {
	cells := make([][]string, len(rows))
	for i, r := range rows {
		cells[i] = []string{r.Scenario, r.Figure, r.Target, r.Limit, r.Ratio, r.Met}
	}
	writeGrid(w, "", []string{"scenario", "figure", "target", "limit measured in this run", "ratio", "met"}, cells)
}

// writeGrid writes a Markdown table with aligned columns, each line after
// prefix.
func writeGrid(w io.Writer, prefix string, head []string, rows [][]string) {
	all := append([][]string{head}, rows...)
	width := make([]int, len(head))
	for _, r := range all {
		for i, f := range r {
			width[i] = max(width[i], len([]rune(f)))
		}
	}
	for n, r := range all {
		cells := make([]string, len(head))
		for i, f := range r {
			cells[i] = f + strings.Repeat(" ", width[i]-len([]rune(f)))
		}
		fmt.Fprintf(w, "%s| %s |\n", prefix, strings.Join(cells, " | "))
		if n == 0 {
			dashes := make([]string, len(head))
			for i := range dashes {
				dashes[i] = strings.Repeat("-", width[i])
			}
			fmt.Fprintf(w, "%s| %s |\n", prefix, strings.Join(dashes, " | "))
		}
	}
}

// system is the running services, seen from outside.
type system struct {
	api            string
	apiProc        *cluster.Proc
	scheduler      string          // base URL of the first scheduler
	schedulerProcs []*cluster.Proc // the first (the scale-out scenario runs a second one of its own)
	db             *sql.DB
	prof           profiler
	gateways       []string // host:port of each gateway
	gatewayProcs   []*cluster.Proc
	confPath       string // the services' TOML
	token          string
	client         *http.Client
}

func start(c *cluster.Cluster, confPath string) (system, error) {
	if _, err := c.Run("scheduler", "migrate"); err != nil {
		return system{}, err
	}
	sys := system{confPath: confPath}
	specs := []struct{ label, bin string }{
		{"scheduler", "scheduler"}, {"agent-gateway-1", "agent-gateway"}, {"agent-gateway-2", "agent-gateway"}, {"api-server", "api-server"},
	}
	for _, s := range specs {
		port, err := cluster.FreePort()
		if err != nil {
			return system{}, err
		}
		p, err := sys.startService(c, s.label, s.bin, port)
		if err != nil {
			return system{}, err
		}
		switch s.bin {
		case "agent-gateway":
			sys.gateways = append(sys.gateways, fmt.Sprintf("127.0.0.1:%d", port))
			sys.gatewayProcs = append(sys.gatewayProcs, p)
		case "scheduler":
			sys.scheduler = fmt.Sprintf("http://127.0.0.1:%d", port)
			sys.schedulerProcs = append(sys.schedulerProcs, p)
		case "api-server":
			sys.api, sys.apiProc = fmt.Sprintf("http://127.0.0.1:%d", port), p
		}
	}
	tok, err := c.Run("api-server", "token", "--subject", "bench", "--role", "operator", "--ttl", "2h")
	if err != nil {
		return system{}, err
	}
	sys.token = strings.TrimSpace(tok)
	sys.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	return sys, nil
}

// startService starts one service process (label is also its instance id's
// suffix and log name) on port with the bench's configuration and waits until
// it is ready.
func (s system) startService(c *cluster.Cluster, label, bin string, port int) (*cluster.Proc, error) {
	p, err := c.Start(label, bin, []string{"VIWORKS_INSTANCE_ID=bench-" + label}, "--config", s.confPath, "--port", strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	if err := cluster.WaitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", port), p, 30*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// perProcess bounds the agents one agentsim process holds (a process may open
// at most 20,000 files here).
const perProcess = 9500

// processes is the number of agentsim processes startFleet uses for n agents
// over gateways gateways.
func processes(n, gateways int) int {
	total := 0
	for g := range gateways {
		share := n*(g+1)/gateways - n*g/gateways
		total += (share + perProcess - 1) / perProcess
	}
	return total
}

// startFleet runs n simulated agents named prefix+index, split evenly over
// the gateways and over as many agentsim processes as each share needs.
func startFleet(c *cluster.Cluster, gateways []string, label, prefix string, n int, extra ...string) ([]*cluster.Proc, error) {
	var procs []*cluster.Proc
	for g, gw := range gateways {
		lo, hi := n*g/len(gateways), n*(g+1)/len(gateways)
		for first := lo; first < hi; first += perProcess {
			p, err := startSim(c, fmt.Sprintf("%s-%d", label, len(procs)), gw, prefix, first, min(perProcess, hi-first), simConnectRate, extra...)
			if err != nil {
				return procs, err
			}
			procs = append(procs, p)
		}
	}
	return procs, nil
}

// startChunks runs agents prefix0.. on one gateway in one agentsim process
// per chunk (chunk k holds the next chunks[k] indexes), so that stopping the
// last processes leaves the first agents connected.
func startChunks(c *cluster.Cluster, gw, label, prefix string, chunks []int, extra ...string) ([]*cluster.Proc, error) {
	total := 0
	for _, n := range chunks {
		total += n
	}
	var procs []*cluster.Proc
	first := 0
	for k, n := range chunks {
		p, err := startSim(c, fmt.Sprintf("%s-%d", label, k), gw, prefix, first, n, chunkRate(n, total), extra...)
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
		first += n
	}
	return procs, nil
}

// simConnectRate is how many agents per second each agentsim process of
// startFleet starts.
const simConnectRate = 5000

// chunkRate is the start rate of a startChunks process of n of total agents:
// together they start 2 × simConnectRate agents/s (what two full processes
// of startFleet offer) and finish starting at the same time.
func chunkRate(n, total int) float64 {
	return 2 * simConnectRate * float64(n) / float64(max(total, 1))
}

func startSim(c *cluster.Cluster, label, gw, prefix string, first, count int, rate float64, extra ...string) (*cluster.Proc, error) {
	args := append([]string{"--gateway", "ws://" + gw + "/ws/agent", "--agents", strconv.Itoa(count), "--prefix", prefix,
		"--start-index", strconv.Itoa(first), "--enrollment-secret", c.Getenv("AGENT_ENROLLMENT_SECRET"),
		"--log-level", "warn", "--connect-rate", strconv.FormatFloat(rate, 'f', 1, 64)}, extra...)
	return c.Start(label, "agentsim", nil, args...)
}

// waitFleet waits until n agents named prefix* are online and every other
// agent is offline (a previous scenario's fleet, stopped just before, has
// gone), reading the agents table.
func (s system) waitFleet(ctx context.Context, prefix string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var mine, others int
		err := s.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE starts_with(id, $1)), count(*) FILTER (WHERE NOT starts_with(id, $1))
FROM agents WHERE status = 'online'`, prefix).Scan(&mine, &others)
		if err != nil {
			return fmt.Errorf("counting online agents: %w", err)
		}
		if mine >= n && others == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %d of %d %s* agents online, %d others still online", timeout, mine, n, prefix, others)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type connResult struct {
	perSessionKiB float64
	rate          float64
	cpuPerConnect time.Duration // the gateway's CPU over the connect burst, per agent
}

// connect starts n idle agents on the first gateway, in one agentsim process
// per chunk, and measures the gateway's RSS per session, the connect rate
// and its CPU per connect. The agents stay connected (for the reconnect storm
// and the growth scenario); the caller stops them.
func connect(ctx context.Context, c *cluster.Cluster, sys system, chunks []int, progress func(string, ...any), extra ...string) (connResult, []*cluster.Proc, error) {
	var out connResult
	n := 0
	for _, k := range chunks {
		n += k
	}
	pid := sys.gatewayProcs[0].Cmd.Process.Pid
	before, err := rssKiB(pid)
	if err != nil {
		return out, nil, err
	}
	cpu0 := serviceCPU(pid)
	start := time.Now()
	procs, err := startChunks(c, sys.gateways[0], "conn-agentsim", "c-", chunks, extra...)
	if err != nil {
		return out, procs, err
	}
	if err := sys.waitSessions(ctx, 0, n, 5*time.Minute, progress); err != nil {
		return out, procs, fmt.Errorf("connections: %w", err)
	}
	out.rate = float64(n) / time.Since(start).Seconds()
	out.cpuPerConnect = (serviceCPU(pid) - cpu0) / time.Duration(n)
	time.Sleep(3 * time.Second) // let the connect burst's garbage go
	after, err := rssKiB(pid)
	if err != nil {
		return out, procs, err
	}
	out.perSessionKiB = float64(after-before) / float64(n)
	progress("connections: gateway RSS %d KiB idle, %d KiB with %d sessions", before, after, n)
	return out, procs, nil
}

// waitSessions waits until gateway g holds exactly n sessions.
func (s system) waitSessions(ctx context.Context, g, n int, timeout time.Duration, progress func(string, ...any)) error {
	start, last := time.Now(), time.Now()
	for {
		v, err := s.metric("http://"+s.gateways[g], "viworks_gateway_sessions")
		if err != nil {
			return err
		}
		if got := int(v); got == n {
			return nil
		} else if time.Since(start) > timeout {
			return fmt.Errorf("%d of %d sessions on gateway %d after %s", got, n, g+1, timeout)
		} else if time.Since(last) > 5*time.Second {
			last = time.Now()
			progress("%d of %d sessions on gateway %d", got, n, g+1)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func rssKiB(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading gateway RSS: %w", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// metric sums the samples of one Prometheus metric (every label set) served
// at base/metrics; name may end in a first label, `x_total{type="A"`, to sum
// only the samples that have it.
func (s system) metric(base, name string) (float64, error) {
	resp, err := s.client.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	labelled := strings.Contains(name, "{")
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || len(rest) == 0 {
			continue
		}
		if labelled && rest[0] != ',' && rest[0] != '}' || !labelled && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		fields := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(fields) == 0 {
			continue
		}
		f, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", name, err)
		}
		sum += f
	}
	return sum, nil
}

func (s system) do(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (s system) post(verb string, targets []string) (string, error) {
	var created struct {
		ID string `json:"id"`
	}
	err := s.do(http.MethodPost, "/api/v1/commands", map[string]any{"verb": verb, "args": map[string]any{"message": "bench"}, "agent_targets": targets}, &created)
	return created.ID, err
}

// subscribeResults delivers the command id of every durable result, from the
// gateways' wake messages (published after the result is committed).
func subscribeResults(ctx context.Context, b *bus.Redis) (<-chan string, error) {
	sub, err := b.Subscribe(ctx, bus.TopicScheduler)
	if err != nil {
		return nil, err
	}
	out := make(chan string, 1<<16)
	go func() {
		defer sub.Close()
		for m := range sub.Messages() {
			var w bus.Wake
			if json.Unmarshal(m.Payload, &w) == nil && w.Reason == bus.WakeResult {
				for _, id := range w.CommandIDs {
					out <- id
				}
			}
		}
	}()
	return out, nil
}

// latency posts single-target commands one after another and measures POST to
// durable result.
func latency(ctx context.Context, s system, results <-chan string, n, agents int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := range n {
		t := time.Now()
		id, err := s.post("echo", []string{"b-" + strconv.Itoa(i%agents)})
		if err != nil {
			return nil, err
		}
		if err := waitFor(ctx, results, id, 10*time.Second); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

func waitFor(ctx context.Context, results <-chan string, id string, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case got := <-results:
			if got == id {
				return nil
			}
		case <-timer.C:
			return fmt.Errorf("no result for command %s within %s", id, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// throughput keeps commands of fanOut agents (prefix0..) flowing for dur and counts
// durable results per second.
func throughput(ctx context.Context, s system, results <-chan string, prefix string, agents, fanOut int, dur time.Duration, progress func(string, ...any)) (float64, error) {
	const window = 8 // commands in flight at once
	start := time.Now()
	submitted, done := 0, 0
	next := 0
	inflight := 0
	lastReport := start
	for {
		for inflight < window && time.Since(start) < dur {
			targets := make([]string, fanOut)
			for i := range targets {
				targets[i] = prefix + strconv.Itoa((next+i)%agents)
			}
			next += fanOut
			if _, err := s.post("echo", targets); err != nil {
				return 0, err
			}
			inflight++
			submitted += fanOut
		}
		if time.Since(start) >= dur && done >= submitted {
			break
		}
		select {
		case <-results:
			done++
			if done%fanOut == 0 {
				inflight--
			}
		case <-time.After(30 * time.Second):
			return 0, errors.New("throughput: no result for 30s")
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if time.Since(lastReport) > 5*time.Second {
			lastReport = time.Now()
			progress("throughput: %d of %d executions done", done, submitted)
		}
	}
	return float64(done) / time.Since(start).Seconds(), nil
}
