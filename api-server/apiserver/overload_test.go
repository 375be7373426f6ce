package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// slowStore is a real store whose ListAgents waits until released or until
// the request's context ends, then fails with the context's error wrapped as
// the store wraps a driver's.
type slowStore struct {
	*store.Store
	calls   atomic.Int64
	release chan struct{}

	listErr  error         // when set, ListAgents fails with it at once
	pingGate chan struct{} // when set, Ping waits for it to close, then fails
	pings    atomic.Int64
}

func (s *slowStore) Ping(ctx context.Context) error {
	s.pings.Add(1)
	if s.pingGate == nil {
		return s.Store.Ping(ctx)
	}
	select {
	case <-s.pingGate:
	case <-ctx.Done():
	}
	return errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
}

func (s *slowStore) CreateCommand(ctx context.Context, nc store.NewCommand) (store.Command, []store.Execution, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
		return s.Store.CreateCommand(ctx, nc)
	case <-ctx.Done():
		return store.Command{}, nil, fmt.Errorf("creating command: %w", ctx.Err())
	}
}

func (s *slowStore) ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error) {
	s.calls.Add(1)
	if s.listErr != nil {
		return nil, s.listErr
	}
	select {
	case <-s.release:
		return s.Store.ListAgents(ctx, f)
	case <-ctx.Done():
		return nil, fmt.Errorf("listing agents: %w", ctx.Err())
	}
}

type overloadAPI struct {
	srv   *Server
	st    *slowStore
	http  *httptest.Server
	token string // a viewer's
	op    string // an operator's
	reg   *prometheus.Registry
	logs  *logtest.Hook
}

// newOverloadAPI serves an API over a real SQLite store behind slowStore on
// a real HTTP server, without the read cache (which would share the store
// calls the tests count); setup runs before it serves.
func newOverloadAPI(t *testing.T, cfg Config, setup ...func(*slowStore, *Server)) *overloadAPI {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: store.SQLitePrefix + filepath.Join(t.TempDir(), "viworks.db")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	jwt, err := auth.NewJWT(auth.Config{Secret: []byte(strings.Repeat("k", 48)), Issuer: "viworks-test", Audience: "viworks-api"})
	require.NoError(t, err)
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	slow := &slowStore{Store: st, release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	if cfg.ReadCacheTTL == 0 {
		cfg.ReadCacheTTL = -1
	}
	srv, err := New(slow, bus.NewMemory(), jwt, reg, log, cfg)
	require.NoError(t, err)
	for _, f := range setup {
		f(slow, srv)
	}
	tok, err := jwt.Issue("viewer-user", auth.RoleViewer, time.Hour)
	require.NoError(t, err)
	op, err := jwt.Issue("operator-user", auth.RoleOperator, time.Hour)
	require.NoError(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	return &overloadAPI{srv: srv, st: slow, http: hs, token: tok, op: op, reg: reg, logs: hook}
}

func (a *overloadAPI) get(t *testing.T, ctx context.Context, path string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.http.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+a.token)
	return http.DefaultClient.Do(req)
}

// status GETs path and returns the answer's status, 0 when there was none.
func (a *overloadAPI) status(t *testing.T, ctx context.Context, path string) int {
	resp, err := a.get(t, ctx, path)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// problemOf reads a problem+json answer.
func problemOf(t *testing.T, resp *http.Response) Problem {
	t.Helper()
	defer resp.Body.Close()
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p Problem
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &p))
	return p
}

// With max_connections=2 and two requests held in the store, the third is
// shed at once (503, Retry-After) without reaching the store; health checks
// still answer; once the two finish, requests are served again.
func TestInFlightBoundShedsAtOnce(t *testing.T) {
	a := newOverloadAPI(t, Config{MaxInFlight: 2, RequestTimeout: time.Minute})
	ctx := context.Background()
	held := make(chan int, 2)
	for range 2 {
		go func() { held <- a.status(t, ctx, "/api/v1/agents") }()
	}
	require.Eventually(t, func() bool { return a.st.calls.Load() == 2 }, 5*time.Second, 5*time.Millisecond)

	for _, tc := range []struct {
		name, path string
		status     int
	}{
		{"third request is shed", "/api/v1/agents", http.StatusServiceUnavailable},
		{"another route is shed too", "/api/v1/commands", http.StatusServiceUnavailable},
		{"health is exempt", "/api/v1/health", http.StatusOK},
		{"dependency health is exempt", "/api/v1/health/database", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := a.get(t, ctx, tc.path)
			require.NoError(t, err)
			require.Less(t, time.Since(start), 2*time.Second, "answered at once")
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.status == http.StatusServiceUnavailable {
				require.Equal(t, shedRetryAfter, resp.Header.Get("Retry-After"))
				require.Contains(t, problemOf(t, resp).Detail, "server.max_connections")
			} else {
				_ = resp.Body.Close()
			}
		})
	}
	require.EqualValues(t, 2, a.st.calls.Load(), "a shed request never reaches the store")
	require.InDelta(t, 2, testutil.ToFloat64(a.srv.shedCount), 0)

	close(a.st.release)
	require.Equal(t, http.StatusOK, <-held)
	require.Equal(t, http.StatusOK, <-held)
	resp, err := a.get(t, ctx, "/api/v1/agents")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// With two turns (MaxRunning) held in the store, a third request admitted
// under max_connections waits QueueWait for a turn, then is shed (503,
// Retry-After) without reaching the store; a turn that frees up within the
// wait is taken.
func TestQueueWaitShedsWhenNoTurnFrees(t *testing.T) {
	a := newOverloadAPI(t, Config{MaxInFlight: 100, MaxRunning: 2, QueueWait: time.Second, RequestTimeout: time.Minute})
	ctx := context.Background()
	held := make(chan int, 3)
	hold := func() { held <- a.status(t, ctx, "/api/v1/agents") }
	for range 2 {
		go hold()
	}
	require.Eventually(t, func() bool { return a.st.calls.Load() == 2 }, 5*time.Second, 5*time.Millisecond)

	resp, err := a.get(t, ctx, "/api/v1/agents")
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, shedRetryAfter, resp.Header.Get("Retry-After"))
	require.Equal(t, "the server is busy; retry shortly", problemOf(t, resp).Detail)
	require.EqualValues(t, 2, a.st.calls.Load(), "a shed request never reaches the store")
	require.InDelta(t, 1, testutil.ToFloat64(a.srv.shedCount), 0)

	// A waiting request takes the turn the first held one gives back.
	go hold()
	require.Never(t, func() bool { return a.st.calls.Load() > 2 }, 50*time.Millisecond, 5*time.Millisecond)
	a.st.release <- struct{}{}
	require.Equal(t, http.StatusOK, <-held)
	require.Eventually(t, func() bool { return a.st.calls.Load() == 3 }, 5*time.Second, 5*time.Millisecond)
	close(a.st.release)
	for range 2 {
		require.Equal(t, http.StatusOK, <-held)
	}
}

// A request past server.request_timeout answers 503 with Retry-After, is
// logged as such and not as a database outage; an event stream outlives the
// timeout.
func TestRequestTimeout(t *testing.T) {
	a := newOverloadAPI(t, Config{RequestTimeout: 300 * time.Millisecond, EventKeepAlive: 50 * time.Millisecond})
	ctx := context.Background()

	t.Run("a slow request answers 503", func(t *testing.T) {
		start := time.Now()
		resp, err := a.get(t, ctx, "/api/v1/agents")
		require.NoError(t, err)
		require.Less(t, time.Since(start), 3*time.Second)
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		require.Equal(t, shedRetryAfter, resp.Header.Get("Retry-After"))
		require.Contains(t, problemOf(t, resp).Detail, "server.request_timeout")
		for _, e := range a.logs.AllEntries() {
			require.NotEqual(t, "unavailable", e.Data["database"], "logged as a database outage: %s", e.Message)
		}
	})

	t.Run("the event stream outlives it", func(t *testing.T) {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := a.get(t, sctx, "/api/v1/events")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		r := bufio.NewReader(resp.Body)
		deadline := time.Now().Add(3 * 300 * time.Millisecond)
		for time.Now().Before(deadline) {
			_, err := r.ReadString('\n')
			require.NoError(t, err, "the stream ended")
		}
	})
}

// A client that goes away while its request waits on the store is neither
// answered nor logged as "database unavailable" (nor as an internal error):
// it is recorded as 499 and logged at debug level.
func TestClientGoneIsNotADatabaseOutage(t *testing.T) {
	a := newOverloadAPI(t, Config{RequestTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := a.get(t, ctx, "/api/v1/agents")
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return a.st.calls.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	counter := func() float64 {
		return testutil.ToFloat64(a.srv.requests.WithLabelValues("/api/v1/agents", statusName(statusClientClosed)))
	}
	require.Eventually(t, func() bool { return counter() == 1 }, 5*time.Second, 5*time.Millisecond)
	for _, e := range a.logs.AllEntries() {
		require.NotEqual(t, "unavailable", e.Data["database"], "logged as a database outage: %s", e.Message)
		require.Less(t, logrus.WarnLevel, e.Level, "logged at %s: %s", e.Level, e.Message)
	}
	require.Contains(t, messages(a.logs), "client went away before the answer")
}

// An Idempotency-Key whose first request lost its client is released: the
// retry runs again instead of replaying the 499 nobody read.
func TestClientGoneReleasesTheIdempotencyKey(t *testing.T) {
	a := newOverloadAPI(t, Config{RequestTimeout: time.Minute})
	post := func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.http.URL+"/api/v1/commands",
			strings.NewReader(`{"verb":"echo","agent_targets":["a-1"]}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+a.op)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "k-1")
		return http.DefaultClient.Do(req)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		resp, err := post(ctx)
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return a.st.calls.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(a.srv.requests.WithLabelValues("/api/v1/commands", statusName(statusClientClosed))) == 1
	}, 5*time.Second, 5*time.Millisecond)

	close(a.st.release)
	resp, err := post(context.Background())
	require.NoError(t, err)
	require.Empty(t, resp.Header.Get("Idempotent-Replayed"), "the lost answer is not replayed")
	require.Equal(t, http.StatusUnprocessableEntity, resp.StatusCode, "the retry ran: no agent matches")
	require.Contains(t, problemOf(t, resp).Detail, "not registered")
}

func messages(h *logtest.Hook) []string {
	var out []string
	for _, e := range h.AllEntries() {
		out = append(out, e.Message)
	}
	return out
}

// testClock is a time.Now that a test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *testClock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// Many requests failing at once while the database is down ping it once, not
// once each, and all answer 503 "database unavailable"; the next ping is a
// second later, however many fail meanwhile.
func TestFailingRequestsPingOncePerSecond(t *testing.T) {
	clk := &testClock{now: time.Unix(1_000_000, 0)}
	// MaxRunning above n: all n requests run at once and fail together.
	a := newOverloadAPI(t, Config{RequestTimeout: time.Minute, MaxRunning: 64}, func(st *slowStore, srv *Server) {
		st.listErr = errors.New("listing agents: statement failed")
		st.pingGate = make(chan struct{})
		srv.probe.now = clk.Now
	})
	ctx := context.Background()
	const n = 20
	codes := make(chan int, n)
	for range n {
		go func() { codes <- a.status(t, ctx, "/api/v1/agents") }()
	}
	require.Eventually(t, func() bool { return a.st.calls.Load() == n }, 10*time.Second, 5*time.Millisecond)
	close(a.st.pingGate)
	for range n {
		require.Equal(t, http.StatusServiceUnavailable, <-codes)
	}
	require.EqualValues(t, 1, a.st.pings.Load(), "one ping for all the failing requests")

	unavailable := func() {
		t.Helper()
		resp, err := a.get(t, ctx, "/api/v1/agents")
		require.NoError(t, err)
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		require.Equal(t, "2", resp.Header.Get("Retry-After"))
		require.Contains(t, problemOf(t, resp).Detail, "database is unavailable")
	}
	clk.add(999 * time.Millisecond)
	unavailable()
	require.EqualValues(t, 1, a.st.pings.Load(), "within the second the last answer holds")
	clk.add(time.Millisecond)
	unavailable()
	unavailable()
	require.EqualValues(t, 2, a.st.pings.Load(), "a second later, one more ping")
}

// A failed statement while the database is reachable is a 500, and the ping
// that told it is shared likewise.
func TestFailedStatementIs500(t *testing.T) {
	clk := &testClock{now: time.Unix(1_000_000, 0)}
	a := newOverloadAPI(t, Config{RequestTimeout: time.Minute}, func(st *slowStore, srv *Server) {
		st.listErr = errors.New("listing agents: statement failed")
		srv.probe.now = clk.Now
	})
	for range 3 {
		resp, err := a.get(t, context.Background(), "/api/v1/agents")
		require.NoError(t, err)
		require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		_ = resp.Body.Close()
	}
	require.EqualValues(t, 1, a.st.pings.Load())
}
