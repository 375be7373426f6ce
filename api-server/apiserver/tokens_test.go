package apiserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// openStream opens GET /api/v1/events on srv with token; the response body
// is closed at cleanup.
func openStream(t *testing.T, srv *httptest.Server, token string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/events", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { cancel(); _ = resp.Body.Close() })
	return resp
}

// streamEnd reads a stream until it ends and returns the last `data:` line
// of an `event: end`, failing after within.
func streamEnd(t *testing.T, resp *http.Response, within time.Duration) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		end, last := false, ""
		for sc.Scan() {
			line := sc.Text()
			if line == "event: end" {
				end = true
			}
			if end && strings.HasPrefix(line, "data: ") {
				last = line
			}
		}
		done <- last
	}()
	select {
	case last := <-done:
		return last
	case <-time.After(within):
		t.Fatalf("the stream was still open after %s", within)
		return ""
	}
}

func TestEventStreamsCappedPerPrincipal(t *testing.T) {
	a := newSecAPI(t, nil, Config{Events: events.HubConfig{MaxClients: 10, MaxPerOwner: 2}})
	srv := httptest.NewServer(a.srv.Handler())
	t.Cleanup(srv.Close)

	// One viewer token tries to take every stream of the replica.
	for i := 0; i < 2; i++ {
		require.Equal(t, http.StatusOK, openStream(t, srv, a.tokens[auth.RoleViewer]).StatusCode)
	}
	resp := openStream(t, srv, a.tokens[auth.RoleViewer])
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(body), "at most 2 event streams per principal")

	// Another principal (the admin) is still served.
	require.Equal(t, http.StatusOK, openStream(t, srv, a.tokens[auth.RoleAdmin]).StatusCode)
	require.Equal(t, 3, a.srv.hub.Clients())
}

func TestEventStreamEndsAtTokenExpiry(t *testing.T) {
	a := newSecAPI(t, nil, Config{})
	srv := httptest.NewServer(a.srv.Handler())
	t.Cleanup(srv.Close)
	short, err := a.jwt.Issue("short-lived", auth.RoleViewer, 2*time.Second)
	require.NoError(t, err)
	resp := openStream(t, srv, short)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, `data: {"reason":"token expired"}`, streamEnd(t, resp, 5*time.Second))
	require.Eventually(t, func() bool { return a.srv.hub.Clients() == 0 }, 2*time.Second, 10*time.Millisecond)
}

func TestLongLivedTokensRefused(t *testing.T) {
	a := newSecAPI(t, nil, Config{})
	now := time.Now()
	forge := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(strings.Repeat("k", 48)))
		require.NoError(t, err)
		return s
	}
	base := jwt.MapClaims{"sub": "mallory", "role": "admin", "iss": "viworks-test", "aud": "viworks-api", "iat": now.Unix()}
	century := jwt.MapClaims{"exp": now.Add(100 * 365 * 24 * time.Hour).Unix()}
	noIAT := jwt.MapClaims{"exp": now.Add(time.Hour).Unix(), "iat": nil}
	for name, extra := range map[string]jwt.MapClaims{"100 years": century, "no iat": noIAT} {
		c := jwt.MapClaims{}
		for k, v := range base {
			c[k] = v
		}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
				continue
			}
			c[k] = v
		}
		require.Equal(t, http.StatusUnauthorized, a.req("Bearer "+forge(c), "GET", "/api/v1/agents", "").Code, name)
	}
}

func TestRevokedAPIKeyEndsItsTokensOnEveryReplica(t *testing.T) {
	st := openPostgres(t, storetest.MigratedPostgres(t))
	cfg := Config{RevocationCacheTTL: 200 * time.Millisecond, EventRevocationCheck: 100 * time.Millisecond}
	a1 := newSecAPI(t, st, cfg)
	a2 := newSecAPI(t, st, cfg) // another replica on the same database
	srv2 := httptest.NewServer(a2.srv.Handler())
	t.Cleanup(srv2.Close)

	w := a1.req("admin", "POST", "/api/v1/api-keys", `{"name":"ci","role":"viewer"}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	key := decode[APIKeyView](t, w)
	tr := decode[TokenResponse](t, a1.req("", "POST", "/api/v1/auth/token", `{"api_key":"`+key.Key+`"}`))
	require.Equal(t, http.StatusOK, a2.req("Bearer "+tr.Token, "GET", "/api/v1/agents", "").Code)
	stream := openStream(t, srv2, tr.Token)
	require.Equal(t, http.StatusOK, stream.StatusCode)

	require.Equal(t, http.StatusNoContent, a1.req("admin", "DELETE", "/api/v1/api-keys/"+key.ID, "").Code)
	// The replica that revoked refuses at once; the other within its cache TTL.
	problemFields(t, a1.req("Bearer "+tr.Token, "GET", "/api/v1/agents", ""), http.StatusUnauthorized)
	require.Eventually(t, func() bool {
		return a2.req("Bearer "+tr.Token, "GET", "/api/v1/agents", "").Code == http.StatusUnauthorized
	}, 2*time.Second, 20*time.Millisecond)
	require.Equal(t, `data: {"reason":"token revoked"}`, streamEnd(t, stream, 2*time.Second))

	// A restarted replica (fresh cache) refuses too: the revocation is durable.
	a3 := newSecAPI(t, st, cfg)
	problemFields(t, a3.req("Bearer "+tr.Token, "GET", "/api/v1/agents", ""), http.StatusUnauthorized)
	// Refusals of a revoked token are aggregated like anonymous ones.
	require.NoError(t, a1.srv.refusals.Flush(context.Background()))
	fails := a1.auditActions("auth.failure")
	require.NotEmpty(t, fails)
	require.Contains(t, string(fails[0].Details), "API key revoked")
	require.Len(t, a1.auditActions("api_key.revoke"), 1)
}

func TestTokenExchangeNeverExceedsMaxLifetime(t *testing.T) {
	j, err := auth.NewJWT(auth.Config{Secret: []byte(strings.Repeat("k", 48)), Issuer: "viworks-test", Audience: "viworks-api", TTL: 30 * time.Second, MaxLifetime: time.Minute})
	require.NoError(t, err)
	a := newSecAPI(t, nil, Config{TokenTTL: 48 * time.Hour})
	a.srv.verifier = j
	admin, err := j.Issue("admin-user", auth.RoleAdmin, time.Minute)
	require.NoError(t, err)
	w := a.req("Bearer "+admin, "POST", "/api/v1/api-keys", `{"name":"ci","role":"viewer"}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	key := decode[APIKeyView](t, w)
	w = a.req("", "POST", "/api/v1/auth/token", `{"api_key":"`+key.Key+`"}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	tr := decode[TokenResponse](t, w)
	require.WithinDuration(t, time.Now().Add(time.Minute), tr.ExpiresAt, 2*time.Second)
}

// privateRedis starts a redis-server of the test's own on a free port (never
// the shared one, which the test then kills) and returns its address and a
// function that stops it.
func privateRedis(t *testing.T) (addr string, kill func()) {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(testenv.EnvRequire) == "1" {
			t.Fatal("redis-server is not installed")
		}
		t.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	cmd := exec.Command(path, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	require.NoError(t, cmd.Start())
	stopped := false
	kill = func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	return addr, kill
}

func TestRateLimitWhenRedisFails(t *testing.T) {
	addr, kill := privateRedis(t)
	client := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	limiter, err := ratelimit.NewRedis(client, ratelimit.RedisConfig{KeyPrefix: "test:"})
	require.NoError(t, err)
	a := newSecAPI(t, nil, Config{RateLimit: ratelimit.Limit{Requests: 100, Window: time.Minute}, Limiter: limiter})
	require.Equal(t, http.StatusOK, a.req("viewer", "GET", "/api/v1/agents", "").Code)

	kill() // Redis goes away.
	// The pre-auth per-IP limit fails closed: neither anonymous floods nor
	// tokens pass while it cannot count them.
	for _, authz := range []string{"", "Bearer forged", "viewer"} {
		w := a.req(authz, "GET", "/api/v1/agents", "")
		problemFields(t, w, http.StatusServiceUnavailable)
		require.NotEmpty(t, w.Header().Get("Retry-After"))
	}
	require.Empty(t, a.auditActions("auth.failure"), "refused before authentication")
	require.Equal(t, http.StatusOK, a.req("", "GET", "/api/v1/health", "").Code, "health checks are not limited")
}

// failingFor fails the keys with prefix and counts the others in memory.
type failingFor struct {
	prefix string
	ratelimit.Limiter
}

func (f failingFor) Allow(ctx context.Context, key string, l ratelimit.Limit) (ratelimit.Result, error) {
	if strings.HasPrefix(key, f.prefix) {
		return ratelimit.Result{}, fmt.Errorf("redis: connection refused")
	}
	return f.Limiter.Allow(ctx, key, l)
}

func TestPrincipalLimitFailsOpen(t *testing.T) {
	a := newSecAPI(t, nil, Config{RateLimit: ratelimit.Limit{Requests: 100, Window: time.Minute},
		Limiter: failingFor{prefix: "sub:", Limiter: ratelimit.NewMemory(ratelimit.MemoryConfig{})}})
	require.Equal(t, http.StatusOK, a.req("viewer", "GET", "/api/v1/agents", "").Code, "an authenticated request passes the per-IP limit and is let through")
	require.Equal(t, 1.0, testutil.ToFloat64(a.srv.limitErrs.WithLabelValues(limitPrincipal)), "the failure is counted")
	require.Equal(t, 0.0, testutil.ToFloat64(a.srv.limitErrs.WithLabelValues(limitIP)))
}
