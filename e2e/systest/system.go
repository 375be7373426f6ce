package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/viworks/backend-agent/e2e/cluster"
	"github.com/viworks/backend-agent/pkg/signing"
)

const (
	agentPrefix  = "sys-"
	redisPrefix  = "systest:"
	dbName       = "viworks"
	heartbeatSec = 5 // the gateways' WebSocket ping period and the agents' heartbeat
	drainSec     = 5 // a stopping gateway closes its sessions over this window
	// proxyTimeout is nginx's proxy-read/send-timeout on the WebSocket: above
	// the ping period (the chart uses 3600s; a short one here proves pings keep
	// idle sessions open through the ingress for the whole run).
	proxyTimeout = 30 * time.Second
)

// serviceConfig is the TOML every service reads (the chart's ConfigMap).
const serviceConfig = `[command]
max_concurrent_commands = 100000
max_command_queue_size = 1000000
max_per_agent = 16
retry_delay_ms = 500

[agent_management]
max_agent_connections = 20000
heartbeat_interval = 5
drain_seconds = 5
`

// slot is one replica: a port that stays (nginx's upstream entry) and the
// process currently serving it.
type slot struct {
	role string // binary
	port int
	gen  int
	id   string // VIWORKS_INSTANCE_ID of the current process
	proc *cluster.Proc
}

type system struct {
	o        options
	work     string
	builtBin string
	c        *cluster.Cluster
	pg       *postgres
	rds      *redisServer
	ngx      *nginx
	db       *pgxpool.Pool
	rdb      *redis.Client
	conf     string

	apis, gws, scheds []*slot
	sims              []*cluster.Proc
	agentIDs          []string
	base              string // the ingress, http://127.0.0.1:PORT
	token             string
	client            *http.Client
}

// freePorts returns n free loopback ports below the kernel's ephemeral range:
// thousands of agent and proxy connections use ephemeral ports, and one of
// them could hold a replaced pod's port when it binds again.
func freePorts(n int) ([]int, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				low = v
			}
		}
	}
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, errors.New("no free port below the ephemeral range")
		}
		p := 10000 + mrand.IntN(low-10000)
		if seen[p] {
			continue
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = ln.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func startSystem(ctx context.Context, o options, logf func(string, ...any)) (*system, error) {
	work, err := os.MkdirTemp("", "viworks-systest-")
	if err != nil {
		return nil, err
	}
	// The postgres user must reach its data directory inside.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, err
	}
	s := &system{o: o, work: work, client: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
	logf("work directory %s", work)

	bin := o.bin
	if bin == "" {
		logf("building binaries")
		if bin, err = cluster.Build(o.root); err != nil {
			return s, err
		}
		s.builtBin = bin
	} else if bin, err = filepath.Abs(bin); err != nil {
		return s, err
	}
	for name := range cluster.Packages {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return s, fmt.Errorf("binary %s missing in %s (run make build): %w", name, bin, err)
		}
	}

	ports, err := freePorts(2 + 1 + 2 + 3 + 2)
	if err != nil {
		return s, err
	}
	pgPort, redisPort, ingressPort := ports[0], ports[1], ports[2]
	apiPorts, gwPorts, schedPorts := ports[3:5], ports[5:8], ports[8:10]

	logf("private postgres on port %d (initdb)", pgPort)
	if s.pg, err = newPostgres(work, pgPort); err != nil {
		return s, err
	}
	if err := s.pg.start(); err != nil {
		return s, err
	}
	if err := s.pg.createDB(ctx, dbName); err != nil {
		return s, err
	}
	logf("private redis on port %d", redisPort)
	s.rds = &redisServer{port: redisPort, logPath: filepath.Join(work, "redis.log")}
	if err := s.rds.start(ctx); err != nil {
		return s, err
	}
	s.rdb = redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", redisPort)})

	keyPath := filepath.Join(work, "signing.key")
	if _, err := signing.GenerateKeyFile(keyPath); err != nil {
		return s, err
	}
	s.conf = filepath.Join(work, "viworks.toml")
	if err := os.WriteFile(s.conf, []byte(serviceConfig), 0o600); err != nil {
		return s, err
	}
	s.c = &cluster.Cluster{Bin: bin, Dir: work, Env: append(os.Environ(),
		"DATABASE_URL="+s.pg.URL(dbName),
		"REDIS_URL="+s.rds.URL(),
		"REDIS_KEY_PREFIX="+redisPrefix,
		"BACKEND_PRIVATE_KEY_PATH="+keyPath,
		"JWT_SECRET=systest-"+randomHex(24), "AUDIT_HMAC_KEY=systest-audit-"+randomHex(24),
		"ARGS_ENCRYPTION_KEY="+randomHex(32),
		"AGENT_ENROLLMENT_SECRET=enroll-"+randomHex(12),
		"LOG_FORMAT=text", "LOG_LEVEL=info", "VIWORKS_DEV_MODE=false",
		"RATE_LIMIT_REQUESTS=100000000", // the whole load comes from one address
	)}

	logf("migrating the schema")
	if out, err := s.c.Run("scheduler", "migrate"); err != nil {
		return s, fmt.Errorf("scheduler migrate: %w (%s)", err, out)
	}
	if s.db, err = pgxpool.New(ctx, s.pg.URL(dbName)); err != nil {
		return s, err
	}
	if _, err := s.db.Exec(ctx, resultLogDDL); err != nil {
		return s, fmt.Errorf("installing the result log trigger: %w", err)
	}

	for i, p := range schedPorts {
		s.scheds = append(s.scheds, &slot{role: "scheduler", port: p, id: fmt.Sprintf("sched-%d", i+1)})
	}
	for i, p := range apiPorts {
		s.apis = append(s.apis, &slot{role: "api-server", port: p, id: fmt.Sprintf("api-%d", i+1)})
	}
	for i, p := range gwPorts {
		s.gws = append(s.gws, &slot{role: "agent-gateway", port: p, id: fmt.Sprintf("gw-%d", i+1)})
	}
	logf("starting 2 schedulers, 2 api-servers, 3 agent-gateways")
	for _, group := range [][]*slot{s.scheds, s.apis, s.gws} {
		for _, sl := range group {
			if err := s.startSlot(sl); err != nil {
				return s, err
			}
		}
	}
	for _, group := range [][]*slot{s.scheds, s.apis, s.gws} {
		for _, sl := range group {
			if err := s.waitSlot(sl); err != nil {
				return s, err
			}
		}
	}
	logf("nginx on port %d in front of api-servers %v and gateways %v", ingressPort, apiPorts, gwPorts)
	if s.ngx, err = startNginx(work, ingressPort, apiPorts, gwPorts, proxyTimeout); err != nil {
		return s, err
	}
	s.base = fmt.Sprintf("http://127.0.0.1:%d", ingressPort)
	if err := s.waitIngress(ctx); err != nil {
		return s, err
	}
	tok, err := s.c.Run("api-server", "token", "--subject", "systest", "--role", "operator", "--ttl", "3h")
	if err != nil {
		return s, err
	}
	s.token = strings.TrimSpace(tok)

	logf("starting %d simulated agents over %d agentsim processes, through nginx", o.agents, o.simProcs)
	start := time.Now()
	per := (o.agents + o.simProcs - 1) / o.simProcs
	for i, first := 0, 0; first < o.agents; i, first = i+1, first+per {
		n := min(per, o.agents-first)
		p, err := s.c.Start(fmt.Sprintf("agentsim-%d", i), "agentsim", nil,
			"--gateway", fmt.Sprintf("ws://127.0.0.1:%d/ws/agent", ingressPort),
			"--agents", strconv.Itoa(n), "--prefix", agentPrefix, "--start-index", strconv.Itoa(first),
			"--enrollment-secret", s.c.Getenv("AGENT_ENROLLMENT_SECRET"), "--site", "systest",
			"--connect-rate", "200", "--log-format", "text")
		if err != nil {
			return s, err
		}
		s.sims = append(s.sims, p)
	}
	for i := range o.agents {
		s.agentIDs = append(s.agentIDs, agentPrefix+strconv.Itoa(i))
	}
	if err := s.waitSessions(ctx, o.agents, 2*time.Minute); err != nil {
		return s, err
	}
	logf("%d agents connected in %.1fs; sessions per gateway %v", o.agents, time.Since(start).Seconds(), s.sessionsPerGateway(ctx))
	return s, nil
}

func (s *system) startSlot(sl *slot) error {
	sl.gen++
	id := sl.id
	if sl.gen > 1 {
		// A replaced pod has a new name.
		id = fmt.Sprintf("%s-r%d", strings.SplitN(sl.id, "-r", 2)[0], sl.gen)
	}
	p, err := s.c.Start(fmt.Sprintf("%s.%d", id, sl.gen), sl.role, []string{"VIWORKS_INSTANCE_ID=" + id},
		"--config", s.conf, "--port", strconv.Itoa(sl.port))
	if err != nil {
		return err
	}
	sl.id, sl.proc = id, p
	return nil
}

func (s *system) waitSlot(sl *slot) error {
	return cluster.WaitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", sl.port), sl.proc, 60*time.Second)
}

// waitIngress waits until the API answers through nginx.
func (s *system) waitIngress(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := s.client.Get(s.base + "/api/v1/health")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s.checkDashboard()
			}
		}
		select {
		case <-s.ngx.done:
			b, _ := os.ReadFile(filepath.Join(s.ngx.dir, "error.log"))
			return fmt.Errorf("nginx exited:\n%s", b)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the API did not answer through nginx within 30s")
}

// checkDashboard checks that the dashboard answers through nginx at / (the
// page) and /ui/ (its files), as the chart's Ingress routes them.
func (s *system) checkDashboard() error {
	for _, path := range []string{"/", "/ui/app.js"} {
		resp, err := s.client.Get(s.base + path)
		if err != nil {
			return fmt.Errorf("dashboard %s through nginx: %w", path, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("dashboard %s through nginx: HTTP %d", path, resp.StatusCode)
		}
	}
	return nil
}

// metric reads one unlabelled sample from a service's /metrics.
func metric(port int, name string) (float64, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found on port %d", name, port)
}

// sessionsPerGateway is each live gateway's viworks_gateway_sessions.
func (s *system) sessionsPerGateway(context.Context) map[string]int {
	out := map[string]int{}
	for _, g := range s.gws {
		if v, err := metric(g.port, "viworks_gateway_sessions"); err == nil {
			out[g.id] = int(v)
		}
	}
	return out
}

func (s *system) sessions(ctx context.Context) int {
	n := 0
	for _, v := range s.sessionsPerGateway(ctx) {
		n += v
	}
	return n
}

// waitSessions waits until the gateways hold n sessions in total.
func (s *system) waitSessions(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if last = s.sessions(ctx); last >= n {
			return nil
		}
		for _, p := range s.sims {
			select {
			case <-p.Done:
				return fmt.Errorf("%s exited:\n%s", p.Name, p.Tail(3000))
			default:
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("only %d of %d agents connected after %s", last, n, timeout)
}

// exited lists the service processes that are not running (other than those
// a scenario stopped on purpose, which it replaced).
func (s *system) exited() []string {
	var out []string
	for _, group := range [][]*slot{s.scheds, s.apis, s.gws} {
		for _, sl := range group {
			select {
			case <-sl.proc.Done:
				out = append(out, fmt.Sprintf("%s exited unexpectedly (log %s):\n%s", sl.id, sl.proc.Log, sl.proc.Tail(1500)))
			default:
			}
		}
	}
	for _, p := range s.sims {
		select {
		case <-p.Done:
			out = append(out, p.Name+" exited unexpectedly")
		default:
		}
	}
	if s.ngx != nil {
		select {
		case <-s.ngx.done:
			out = append(out, "nginx exited unexpectedly")
		default:
		}
	}
	return out
}

func (s *system) close(logf func(string, ...any)) {
	if s.c != nil {
		for _, p := range s.c.StopAll(20 * time.Second) {
			logf("%s did not stop within 20s of SIGTERM; killed", p.Name)
		}
	}
	if s.ngx != nil {
		s.ngx.stop()
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.rdb != nil {
		_ = s.rdb.Close()
	}
	if s.rds != nil {
		s.rds.kill()
	}
	if s.pg != nil {
		_ = s.pg.stop()
	}
	if s.builtBin != "" {
		_ = os.RemoveAll(s.builtBin)
	}
	if s.o.keep {
		logf("logs kept in %s", s.work)
		return
	}
	_ = os.RemoveAll(s.work)
}

// resultLogDDL records, with a trigger the harness owns, every write that
// puts an execution in a final state or changes a final one: one row per
// execution means its result was recorded exactly once and never overwritten.
const resultLogDDL = `
CREATE TABLE systest_final_writes (
    execution_id text        NOT NULL,
    old_status   text,
    new_status   text        NOT NULL,
    output       text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX systest_final_writes_exec_idx ON systest_final_writes (execution_id);
CREATE FUNCTION systest_log_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'expired') AND (
        TG_OP = 'INSERT'
        OR OLD.status IS DISTINCT FROM NEW.status
        OR OLD.output IS DISTINCT FROM NEW.output
        OR OLD.exit_code IS DISTINCT FROM NEW.exit_code
        OR OLD.error IS DISTINCT FROM NEW.error
        OR OLD.finished_at IS DISTINCT FROM NEW.finished_at) THEN
        INSERT INTO systest_final_writes (execution_id, old_status, new_status, output)
        VALUES (NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status, NEW.output);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER systest_log_final AFTER INSERT OR UPDATE ON executions
    FOR EACH ROW EXECUTE FUNCTION systest_log_final();
`
