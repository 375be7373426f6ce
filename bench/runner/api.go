package runner

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/e2e/cluster"
)

// apiPath is the request of the api scenario.
const apiPath = "/api/v1/agents?limit=100"

type apiResult struct {
	agents      int
	concurrency int
	dur         time.Duration
	real, bare  loadResult
	bodyBytes   int
	profiles    []string
}

// loadResult is one run of the load generator against one server.
type loadResult struct {
	reqPS       float64
	p50, p99    time.Duration
	genCPUPerRq time.Duration // the load generator's own CPU per request (this process)
	srvCPUPerRq time.Duration // the server process's CPU per request
}

func (r loadResult) String() string {
	return fmt.Sprintf("%.0f req/s, p50 %s, p99 %s, server CPU %.0f µs/req, load generator CPU %.0f µs/req",
		r.reqPS, ms(r.p50), ms(r.p99), float64(r.srvCPUPerRq.Nanoseconds())/1000, float64(r.genCPUPerRq.Nanoseconds())/1000)
}

// insertAgents registers n agents directly in the database, with the fields an
// agentsim agent announces (reported, and trusted as if an enrollment secret
// had fixed them), named api-00000...
func insertAgents(ctx context.Context, db *sql.DB, n int) error {
	_, err := db.ExecContext(ctx, `INSERT INTO agents (id, status, site, version, hostname, os, arch, capabilities, labels,
  gateway_id, session_id, health_status, uptime_s, connected_at, last_seen_at,
  reported_site, reported_labels, reported_capabilities, attributes_source)
SELECT id, 'offline', site, '0.1.0-sim', id, 'linux', 'amd64', caps, labels,
  'bench-agent-gateway', '', 'healthy', i * 10, now(), now(), site, labels, caps, 'enrollment'
FROM generate_series(0, $1 - 1) AS i,
  LATERAL (SELECT 'api-' || lpad(i::text, 5, '0') AS id, 'site-' || (i % 10) AS site,
    '["echo","sleep","fail","ping","shell"]'::jsonb AS caps, jsonb_build_object('env', 'bench', 'rack', 'r' || (i % 40)) AS labels) AS v`, n)
	if err != nil {
		return fmt.Errorf("inserting %d agents: %w", n, err)
	}
	return nil
}

// apiScenario measures GET /api/v1/agents?limit=100 on the real API with n
// agents in the database, then a bare gin handler serving the same bytes from
// its own process, both under the same load generator.
func apiScenario(ctx context.Context, c *cluster.Cluster, sys system, db *sql.DB, n, concurrency int, dur time.Duration, progress func(string, ...any)) (apiResult, error) {
	res := apiResult{agents: n, concurrency: concurrency, dur: dur}
	if err := insertAgents(ctx, db, n); err != nil {
		return res, err
	}
	defer func() {
		_, _ = db.ExecContext(context.WithoutCancel(ctx), `DELETE FROM agents WHERE id LIKE 'api-%'`)
	}()
	hdr := http.Header{"Authorization": {"Bearer " + sys.token}}
	body, err := getOnce(sys.api+apiPath, hdr)
	if err != nil {
		return res, err
	}
	res.bodyBytes = len(body)

	progress("api: real API, %d connections for %s", concurrency, dur)
	wait := sys.prof.capture(ctx, "api", dur, map[string]string{"api": sys.api})
	res.real, err = runLoad(ctx, sys.api+apiPath, hdr, sys.apiProc.Cmd.Process.Pid, concurrency, dur)
	res.profiles = wait()
	if err != nil {
		return res, fmt.Errorf("api: %w", err)
	}

	bodyPath := filepath.Join(c.Dir, "bare-body.json")
	if err := os.WriteFile(bodyPath, body, 0o600); err != nil {
		return res, err
	}
	if err := copySelf(filepath.Join(c.Bin, "bench-bare")); err != nil {
		return res, err
	}
	port, err := cluster.FreePort()
	if err != nil {
		return res, err
	}
	bare, err := c.Start("bare-gin", "bench-bare", nil, "bare-server", "--port", strconv.Itoa(port), "--body", bodyPath)
	if err != nil {
		return res, err
	}
	defer bare.Stop(5 * time.Second)
	bareURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := cluster.WaitReady(bareURL+"/readyz", bare, 10*time.Second); err != nil {
		return res, err
	}
	got, err := getOnce(bareURL+apiPath, hdr)
	if err != nil {
		return res, err
	}
	if string(got) != string(body) {
		return res, errors.New("api: the bare handler does not serve the API's bytes")
	}
	progress("api: bare gin handler, same bytes, same load generator")
	res.bare, err = runLoad(ctx, bareURL+apiPath, hdr, bare.Cmd.Process.Pid, concurrency, dur)
	if err != nil {
		return res, fmt.Errorf("api (bare): %w", err)
	}
	return res, nil
}

// copySelf copies this executable to path, so the cluster can start it as a
// server of its own (the bare handler runs in its own process, like the API).
func copySelf(path string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the bench executable: %w", err)
	}
	raw, err := os.ReadFile(self)
	if err != nil {
		return fmt.Errorf("reading the bench executable: %w", err)
	}
	if err := os.WriteFile(path, raw, 0o755); err != nil {
		return fmt.Errorf("copying the bench executable: %w", err)
	}
	return nil
}

func getOnce(u string, hdr http.Header) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header = hdr.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, raw)
	}
	return raw, nil
}

// runLoad is the load generator: concurrency keep-alive connections, each
// issuing GETs back to back for dur after a short warm-up. It also measures
// its own CPU time and the server's, per request.
func runLoad(ctx context.Context, u string, hdr http.Header, serverPid, concurrency int, dur time.Duration) (loadResult, error) {
	var out loadResult
	tr := &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	warm := min(dur/4, time.Second)
	start := time.Now()
	measureFrom, end := start.Add(warm), start.Add(warm+dur)
	var (
		count   atomic.Int64
		failMu  sync.Mutex
		failure error
		wg      sync.WaitGroup
		lats    = make([][]time.Duration, concurrency)
	)
	var cpu0Gen, cpu0Srv time.Duration
	var cpuOnce sync.Once
	takeCPU := func() { cpu0Gen, cpu0Srv = selfCPU(), procCPU(serverPid) }
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			hdr := hdr.Clone()
			for ctx.Err() == nil {
				now := time.Now()
				if now.After(end) {
					return
				}
				if !now.Before(measureFrom) {
					cpuOnce.Do(takeCPU)
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				req.Header = hdr
				resp, err := client.Do(req)
				if err == nil {
					for {
						if _, rerr := resp.Body.Read(buf); rerr != nil {
							if rerr != io.EOF {
								err = rerr
							}
							break
						}
					}
					_ = resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failMu.Lock()
					failure = err
					failMu.Unlock()
					return
				}
				if !now.Before(measureFrom) {
					count.Add(1)
					lats[w] = append(lats[w], time.Since(now))
				}
			}
		}()
	}
	wg.Wait()
	if failure != nil {
		return out, fmt.Errorf("load generator: %w", failure)
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	elapsed := time.Since(measureFrom)
	gen, srv := selfCPU()-cpu0Gen, procCPU(serverPid)-cpu0Srv
	n := count.Load()
	if n == 0 {
		return out, errors.New("load generator: no request completed")
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	out.reqPS = float64(n) / elapsed.Seconds()
	out.p50, out.p99 = percentile(all, 0.5), percentile(all, 0.99)
	out.genCPUPerRq, out.srvCPUPerRq = gen/time.Duration(n), srv/time.Duration(n)
	return out, nil
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a process's user+system CPU time from /proc (0 when unreadable).
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start after ") ".
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

// ServeBare is `bench bare-server`: a gin engine with one route answering the
// given bytes, the API scenario's limit.
func ServeBare(args []string) error {
	var port int
	var bodyPath string
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--port":
			port, _ = strconv.Atoi(args[i+1])
		case "--body":
			bodyPath = args[i+1]
		}
	}
	if port <= 0 || bodyPath == "" {
		return errors.New("bare-server: --port and --body are required")
	}
	body, err := os.ReadFile(bodyPath)
	if err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.GET("/api/v1/agents", func(c *gin.Context) { c.Data(http.StatusOK, "application/json; charset=utf-8", body) })
	e.GET("/readyz", func(c *gin.Context) { c.Status(http.StatusOK) })
	srv := &http.Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Handler: e, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}
