package apiserver

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/audithead"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/ratelimit/ratelimittest"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// secAPI is an API on a real Postgres.
type secAPI struct {
	t      *testing.T
	srv    *Server
	st     *store.Store
	mem    *bus.Memory
	jwt    *auth.JWT
	tokens map[auth.Role]string
}

func newJWT(t *testing.T) *auth.JWT {
	jwt, err := auth.NewJWT(auth.Config{Secret: []byte(strings.Repeat("k", 48)), Issuer: "viworks-test", Audience: "viworks-api"})
	require.NoError(t, err)
	return jwt
}

func openPostgres(t *testing.T, url string) *store.Store {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	return st
}

func newSecAPI(t *testing.T, st *store.Store, cfg Config) *secAPI {
	t.Helper()
	if st == nil {
		st = openPostgres(t, storetest.MigratedPostgres(t))
	}
	jwt := newJWT(t)
	log := logrus.New()
	log.SetOutput(io.Discard)
	mem := bus.NewMemory()
	srv, err := New(st, mem, jwt, prometheus.NewRegistry(), log, cfg)
	require.NoError(t, err)
	a := &secAPI{t: t, srv: srv, st: st, mem: mem, jwt: jwt, tokens: map[auth.Role]string{}}
	for _, r := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
		tok, err := jwt.Issue(string(r)+"-user", r, time.Hour)
		require.NoError(t, err)
		a.tokens[r] = tok
	}
	return a
}

// req sends a request; auth is a role name, "" for none, or "Bearer ..." verbatim.
func (a *secAPI) req(authz, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	switch {
	case strings.HasPrefix(authz, "Bearer "):
		r.Header.Set("Authorization", authz)
	case authz != "":
		r.Header.Set("Authorization", "Bearer "+a.tokens[auth.Role(authz)])
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "RemoteAddr" {
			r.RemoteAddr = hdr[i+1]
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return serve(a.t, a.srv.Handler(), r)
}

func (a *secAPI) auditActions(action string) []store.AuditEvent {
	a.t.Helper()
	rows, _, err := a.st.ListAudit(context.Background(), store.AuditFilter{Action: action, Page: store.Page{Limit: 1000}})
	require.NoError(a.t, err)
	return rows
}

func TestAPIKeysAndTokenExchange(t *testing.T) {
	a := newSecAPI(t, nil, Config{})

	// Only admins manage keys; denials and missing tokens are audited.
	require.Equal(t, []string{}, problemFields(t, a.req("operator", "POST", "/api/v1/api-keys", `{"name":"ci","role":"viewer"}`), http.StatusForbidden))
	require.Equal(t, []string{}, problemFields(t, a.req("", "GET", "/api/v1/api-keys", ""), http.StatusUnauthorized))
	require.Equal(t, []string{}, problemFields(t, a.req("Bearer nonsense", "GET", "/api/v1/api-keys", ""), http.StatusUnauthorized))
	denied := a.auditActions("auth.denied")
	require.Len(t, denied, 1)
	require.Equal(t, "operator-user", denied[0].Actor)
	require.Equal(t, "POST /api/v1/api-keys", denied[0].Target)
	require.Equal(t, "192.0.2.1", denied[0].ClientIP) // httptest's RemoteAddr
	require.NotEmpty(t, denied[0].RequestID)
	require.Empty(t, a.auditActions("auth.failure"), "anonymous failures are aggregated, not written per request")
	require.NoError(t, a.srv.refusals.Flush(context.Background()))
	fails := a.auditActions("auth.failure")
	require.Len(t, fails, 1, "one event per client address")
	require.Equal(t, "192.0.2.1", fails[0].ClientIP)
	require.JSONEq(t, `{"GET /api/v1/api-keys":2}`, string(mustJSON(t, detailsOf(t, fails[0])["targets"])))
	require.JSONEq(t, `{"no bearer token":1,"invalid or expired token":1}`, string(mustJSON(t, detailsOf(t, fails[0])["reasons"])))

	// Strict bodies name the offending field.
	for _, tc := range []struct {
		body  string
		code  int
		field string
	}{
		{`{"name":"ci","role":"viewer","colour":"red"}`, 400, "body"},
		{`{"name":"","role":"viewer"}`, 400, "name"},
		{`{"name":"` + strings.Repeat("n", 129) + `","role":"viewer"}`, 400, "name"},
		{`{"name":"ci","role":"root"}`, 400, "role"},
		{`{"name":"ci","role":"viewer","expires_in":5}`, 400, "expires_in"},
		{`{"name":"ci","role":"viewer","expires_in":600,"expires_at":"2030-01-01T00:00:00Z"}`, 400, "expires_at"},
		{`{"name":"ci","role":"viewer","expires_at":"2001-01-01T00:00:00Z"}`, 400, "expires_at"},
	} {
		require.Equal(t, []string{tc.field}, problemFields(t, a.req("admin", "POST", "/api/v1/api-keys", tc.body), tc.code), tc.body)
	}
	require.Equal(t, []string{}, problemFields(t, a.req("admin", "POST", "/api/v1/api-keys", `{"name":"`+strings.Repeat("x", 70<<10)+`"}`), http.StatusRequestEntityTooLarge))

	w := a.req("admin", "POST", "/api/v1/api-keys", `{"name":"ci","role":"operator","expires_in":3600}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	require.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	created := decode[APIKeyView](t, w)
	require.True(t, strings.HasPrefix(created.Key, APIKeyPrefix))
	require.Len(t, created.Key, len(APIKeyPrefix)+43) // 256 bits, base64url
	require.Equal(t, created.Key[:12], created.Prefix)
	require.NotNil(t, created.ExpiresAt)

	list := decode[List[APIKeyView]](t, a.req("admin", "GET", "/api/v1/api-keys", ""))
	require.Len(t, list.Items, 1)
	require.Empty(t, list.Items[0].Key)
	require.NotContains(t, a.req("admin", "GET", "/api/v1/api-keys", "").Body.String(), created.Key)

	// Exchange by body and by header; the token carries the key's role.
	for _, send := range []func() *httptest.ResponseRecorder{
		func() *httptest.ResponseRecorder {
			return a.req("", "POST", "/api/v1/auth/token", `{"api_key":"`+created.Key+`"}`)
		},
		func() *httptest.ResponseRecorder {
			return a.req("Bearer "+created.Key, "POST", "/api/v1/auth/token", "")
		},
	} {
		w := send()
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		tr := decode[TokenResponse](t, w)
		require.Equal(t, "Bearer", tr.TokenType)
		require.WithinDuration(t, time.Now().Add(15*time.Minute), tr.ExpiresAt, 5*time.Second)
		p, err := a.jwt.Verify(tr.Token)
		require.NoError(t, err)
		require.Equal(t, "apikey:"+created.ID, p.Subject)
		require.Equal(t, auth.RoleOperator, p.Role)
		require.Equal(t, created.ID, p.APIKeyID, "the token names its API key")
		require.NotEmpty(t, p.TokenID)
		require.Equal(t, http.StatusOK, a.req("Bearer "+tr.Token, "GET", "/api/v1/agents", "").Code)
	}
	require.Len(t, a.auditActions("auth.token"), 2)

	// Unknown, malformed and revoked keys get 401 problem+json, audited.
	problemFields(t, a.req("", "POST", "/api/v1/auth/token", `{"api_key":"vwk_unknown"}`), http.StatusUnauthorized)
	problemFields(t, a.req("", "POST", "/api/v1/auth/token", `{"api_key":"nope"}`), http.StatusUnauthorized)
	require.Equal(t, []string{"api_key"}, problemFields(t, a.req("", "POST", "/api/v1/auth/token", `{}`), http.StatusBadRequest))
	require.Equal(t, http.StatusNotFound, a.req("admin", "DELETE", "/api/v1/api-keys/"+"00000000-0000-0000-0000-000000000000", "").Code)
	require.Equal(t, http.StatusNoContent, a.req("admin", "DELETE", "/api/v1/api-keys/"+created.ID, "").Code)
	problemFields(t, a.req("", "POST", "/api/v1/auth/token", `{"api_key":"`+created.Key+`"}`), http.StatusUnauthorized)
	require.Len(t, a.auditActions("auth.token.denied"), 3)
	require.Len(t, a.auditActions("api_key.create"), 1)
	require.Len(t, a.auditActions("api_key.revoke"), 1)
	list = decode[List[APIKeyView]](t, a.req("admin", "GET", "/api/v1/api-keys", ""))
	require.NotNil(t, list.Items[0].RevokedAt)
	require.NotNil(t, list.Items[0].LastUsedAt)
}

func TestAuditAPI(t *testing.T) {
	url := storetest.MigratedPostgres(t)
	a := newSecAPI(t, openPostgres(t, url), Config{})
	for i := 0; i < 3; i++ {
		w := a.req("admin", "POST", "/api/v1/enrollment-secrets", fmt.Sprintf(`{"name":"s%d"}`, i), "X-Request-ID", fmt.Sprintf("rid-%d", i))
		require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	}
	require.Equal(t, http.StatusForbidden, a.req("operator", "GET", "/api/v1/audit", "").Code)

	page := decode[List[AuditEventView]](t, a.req("admin", "GET", "/api/v1/audit?action=enrollment_secret.create&limit=2", ""))
	require.Len(t, page.Items, 2)
	require.NotNil(t, page.NextCursor)
	require.Equal(t, "rid-2", page.Items[0].RequestID)
	require.Equal(t, "admin-user", page.Items[0].Actor)
	require.Equal(t, "192.0.2.1", page.Items[0].ClientIP)
	require.Len(t, page.Items[0].Hash, 64)
	require.Equal(t, page.Items[1].Hash, page.Items[0].PrevHash)
	next := decode[List[AuditEventView]](t, a.req("admin", "GET", "/api/v1/audit?action=enrollment_secret.create&limit=2&cursor="+*page.NextCursor, ""))
	require.Len(t, next.Items, 1)
	require.Nil(t, next.NextCursor)

	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	require.Len(t, decode[List[AuditEventView]](t, a.req("admin", "GET", "/api/v1/audit?actor=admin-user&from="+from, "")).Items, 3)
	require.Empty(t, decode[List[AuditEventView]](t, a.req("admin", "GET", "/api/v1/audit?actor=nobody", "")).Items)
	require.Equal(t, []string{"from"}, problemFields(t, a.req("admin", "GET", "/api/v1/audit?from=yesterday", ""), http.StatusBadRequest))
	require.Equal(t, []string{"cursor"}, problemFields(t, a.req("admin", "GET", "/api/v1/audit?cursor=zzz", ""), http.StatusBadRequest))
	require.Equal(t, []string{"actor"}, problemFields(t, a.req("admin", "GET", "/api/v1/audit?actor="+strings.Repeat("a", 300), ""), http.StatusBadRequest))

	v := decode[store.AuditVerification](t, a.req("admin", "GET", "/api/v1/audit/verify", ""))
	require.True(t, v.OK)
	require.Positive(t, v.Checked)

	// A superuser edit past the trigger is named by /audit/verify.
	victim := page.Items[1].ID
	db, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`UPDATE audit_events SET details = '{"name":"evil"}' WHERE id = $1`, victim)
	require.Error(t, err, "the trigger refuses edits")
	for _, q := range []string{`ALTER TABLE audit_events DISABLE TRIGGER USER`, `UPDATE audit_events SET details = '{"name":"evil"}' WHERE id = $1`, `ALTER TABLE audit_events ENABLE TRIGGER USER`} {
		var args []any
		if strings.Contains(q, "$1") {
			args = append(args, victim)
		}
		_, err = db.Exec(q, args...)
		require.NoError(t, err)
	}
	v = decode[store.AuditVerification](t, a.req("admin", "GET", "/api/v1/audit/verify", ""))
	require.False(t, v.OK)
	require.Equal(t, victim, v.BrokenID)
}

func TestEnrollmentSecretsAPI(t *testing.T) {
	a := newSecAPI(t, nil, Config{})
	require.Equal(t, http.StatusForbidden, a.req("operator", "POST", "/api/v1/enrollment-secrets", `{"name":"x"}`).Code)
	for _, tc := range []struct{ body, field string }{
		{`{"name":"x","max_uses":0}`, "max_uses"},
		{`{"name":"x","site":"` + strings.Repeat("s", 300) + `"}`, "site"},
		{`{"name":"x","labels":{"":"v"}}`, "labels"},
		{`{"name":"x","expires_in":-1}`, "expires_in"},
		{`{"name":"x","uses":3}`, "body"},
		{`{"site":"dc1"}`, "name"},
	} {
		require.Equal(t, []string{tc.field}, problemFields(t, a.req("admin", "POST", "/api/v1/enrollment-secrets", tc.body), http.StatusBadRequest), tc.body)
	}
	w := a.req("admin", "POST", "/api/v1/enrollment-secrets", `{"name":"dc1 edge","site":"dc1","labels":{"role":"edge"},"max_uses":10,"expires_in":86400}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	sec := decode[EnrollmentSecretView](t, w)
	require.True(t, strings.HasPrefix(sec.Secret, EnrollmentSecretPrefix))
	require.Equal(t, "dc1", sec.Site)
	require.Equal(t, 10, *sec.MaxUses)

	_, err := a.st.EnrollWithSecret(context.Background(), HashSecret(sec.Secret), "agent-1", "cred-1", time.Now())
	require.NoError(t, err)
	list := decode[List[EnrollmentSecretView]](t, a.req("admin", "GET", "/api/v1/enrollment-secrets", ""))
	require.Len(t, list.Items, 1)
	require.Equal(t, 1, list.Items[0].Uses)
	require.Empty(t, list.Items[0].Secret)
	require.Equal(t, map[string]string{"role": "edge"}, list.Items[0].Labels)

	require.Equal(t, http.StatusNoContent, a.req("admin", "DELETE", "/api/v1/enrollment-secrets/"+sec.ID, "").Code)
	require.Equal(t, http.StatusNotFound, a.req("admin", "DELETE", "/api/v1/enrollment-secrets/nope", "").Code)
	list = decode[List[EnrollmentSecretView]](t, a.req("admin", "GET", "/api/v1/enrollment-secrets", ""))
	require.NotNil(t, list.Items[0].RevokedAt)
	require.Len(t, a.auditActions("enrollment_secret.revoke"), 1)
}

func TestRateLimitSharedAcrossReplicas(t *testing.T) {
	_, prefix := testenv.Redis(t)
	st := openPostgres(t, storetest.MigratedPostgres(t))
	cfg := Config{RateLimit: ratelimit.Limit{Requests: 3, Window: time.Minute}}
	cfg.Limiter = ratelimittest.NewRedis(t, prefix)
	a1 := newSecAPI(t, st, cfg)
	cfg.Limiter = ratelimittest.NewRedis(t, prefix) // another replica, its own client
	a2 := newSecAPI(t, st, cfg)
	a2.tokens = a1.tokens

	for i, a := range []*secAPI{a1, a2, a1} {
		w := a.req("viewer", "GET", "/api/v1/agents", "")
		require.Equal(t, http.StatusOK, w.Code, "request %d", i)
		require.Equal(t, "3", w.Header().Get("RateLimit-Limit"))
		require.Equal(t, fmt.Sprint(2-i), w.Header().Get("RateLimit-Remaining"))
		require.NotEmpty(t, w.Header().Get("RateLimit-Reset"))
	}
	w := a2.req("viewer", "GET", "/api/v1/agents", "")
	problemFields(t, w, http.StatusTooManyRequests)
	require.Equal(t, "20", w.Header().Get("Retry-After")) // one request per 20s
	require.Equal(t, "0", w.Header().Get("RateLimit-Remaining"))
	// Health checks are not limited.
	require.Equal(t, http.StatusOK, a1.req("", "GET", "/api/v1/health", "").Code)
}

func TestRateLimitClientIPAndProxies(t *testing.T) {
	cfg := Config{RateLimit: ratelimit.Limit{Requests: 2, Window: time.Minute}, TrustedProxies: []string{"10.0.0.0/8"}}
	a := newSecAPI(t, nil, cfg)
	// Unauthenticated floods are cut per address before auth, which bounds the
	// auth.failure audit events they cause.
	viaProxy := func(xff string) int {
		return a.req("", "GET", "/api/v1/agents", "", "RemoteAddr", "10.1.2.3:4000", "X-Forwarded-For", xff).Code
	}
	require.Equal(t, http.StatusUnauthorized, viaProxy("203.0.113.5"))
	require.Equal(t, http.StatusUnauthorized, viaProxy("203.0.113.5"))
	require.Equal(t, http.StatusTooManyRequests, viaProxy("203.0.113.5"))
	require.Equal(t, http.StatusUnauthorized, viaProxy("203.0.113.6")) // another client behind the proxy
	require.NoError(t, a.srv.refusals.Flush(context.Background()))
	fails := a.auditActions("auth.failure")
	require.Len(t, fails, 2)
	require.Equal(t, "203.0.113.6", fails[0].ClientIP)
	require.Equal(t, "203.0.113.5", fails[1].ClientIP)
	require.EqualValues(t, 2, detailsOf(t, fails[1])["count"])

	// X-Forwarded-For from an untrusted peer is ignored.
	direct := func(xff string) int {
		return a.req("", "GET", "/api/v1/agents", "", "RemoteAddr", "198.51.100.7:5000", "X-Forwarded-For", xff).Code
	}
	require.Equal(t, http.StatusUnauthorized, direct("1.1.1.1"))
	require.Equal(t, http.StatusUnauthorized, direct("2.2.2.2"))
	require.Equal(t, http.StatusTooManyRequests, direct("3.3.3.3"))
	// The address's budget is spent: health checks still answer (probes never get 429).
	for _, path := range []string{"/api/v1/health", "/api/v1/health/database", "/api/v1/health/redis"} {
		w := a.req("", "GET", path, "", "RemoteAddr", "198.51.100.7:5000")
		require.Equal(t, http.StatusOK, w.Code, "%s: %s", path, w.Body.String())
		require.Empty(t, w.Header().Get("RateLimit-Remaining"), path)
	}

	_, err := New(a.st, bus.NewMemory(), a.jwt, nil, logrus.New(), Config{TrustedProxies: []string{"not-a-cidr"}})
	require.Error(t, err)
	_, err = New(a.st, bus.NewMemory(), a.jwt, nil, logrus.New(), Config{RateLimit: ratelimit.Limit{Requests: 5}})
	require.Error(t, err)
}

func TestIdempotentCommandCreation(t *testing.T) {
	a := newSecAPI(t, nil, Config{})
	ctx := context.Background()
	require.NoError(t, a.st.MarkAgentOnline(ctx, store.AgentSession{ID: "gw-1", Capabilities: []string{"echo"}, GatewayID: "g", SessionID: "s", At: time.Now()}))
	body := `{"verb":"echo","agent_targets":["gw-1"]}`
	post := func(key, body string) *httptest.ResponseRecorder {
		return a.req("operator", "POST", "/api/v1/commands", body, "Idempotency-Key", key)
	}
	first := post("k-1", body)
	require.Equal(t, http.StatusAccepted, first.Code, first.Body.String())
	again := post("k-1", body)
	require.Equal(t, http.StatusAccepted, again.Code)
	require.Equal(t, "true", again.Header().Get("Idempotent-Replayed"))
	require.NotEmpty(t, first.Header().Get("Location"))
	require.Equal(t, first.Header().Get("Location"), again.Header().Get("Location"))
	require.JSONEq(t, first.Body.String(), again.Body.String())
	require.Equal(t, []string{"Idempotency-Key"}, problemFields(t, post("k-1", `{"verb":"echo","agent_targets":["gw-1"],"priority":"high"}`), http.StatusUnprocessableEntity))
	require.Equal(t, []string{"Idempotency-Key"}, problemFields(t, post(strings.Repeat("k", 256), body), http.StatusBadRequest))
	require.Equal(t, []string{"Idempotency-Key"}, problemFields(t, post("bad key", body), http.StatusBadRequest))
	// Client mistakes are kept and replayed too.
	require.Equal(t, []string{"verb"}, problemFields(t, post("k-bad", `{"verb":"","agent_targets":["gw-1"]}`), http.StatusBadRequest))
	require.Equal(t, []string{"verb"}, problemFields(t, post("k-bad", `{"verb":"","agent_targets":["gw-1"]}`), http.StatusBadRequest))

	// Concurrent duplicates create one command.
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			codes[i] = post("k-race", body).Code
		}(i)
	}
	wg.Wait()
	for _, c := range codes {
		require.Contains(t, []int{http.StatusAccepted, http.StatusConflict}, c)
	}
	require.Len(t, a.auditActions("command.create"), 2) // k-1 and k-race
	require.Equal(t, http.StatusAccepted, post("k-race", body).Code)
	created := a.auditActions("command.create")
	require.Len(t, created, 2)

	// Command events carry the client IP and request id from the request
	// context, without the handlers passing them.
	id := decode[CommandView](t, first).ID
	require.Equal(t, http.StatusOK, a.req("operator", "DELETE", "/api/v1/commands/"+id, "", "X-Request-ID", "rid-cancel").Code)
	cancelled := a.auditActions("command.cancel")
	require.Len(t, cancelled, 1)
	require.Equal(t, "192.0.2.1", cancelled[0].ClientIP)
	require.Equal(t, "rid-cancel", cancelled[0].RequestID)
	require.Equal(t, "192.0.2.1", created[0].ClientIP)

	// Args are redacted in the audit trail.
	w := a.req("operator", "POST", "/api/v1/commands", `{"verb":"echo","agent_targets":["gw-1"],"args":{"user":"bob","password":"hunter2"}}`)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	created = a.auditActions("command.create")
	require.Contains(t, string(created[0].Details), "REDACTED")
	require.NotContains(t, string(created[0].Details), "hunter2")
}

func TestIPKeyGroupsIPv6Per64(t *testing.T) {
	require.Equal(t, "203.0.113.5", ipKey("203.0.113.5"))
	require.Equal(t, "2001:db8:1:2::/64", ipKey("2001:db8:1:2:aaaa::1"))
	require.Equal(t, ipKey("2001:db8:1:2::1"), ipKey("2001:db8:1:2:ffff:ffff:ffff:ffff"))
	require.Equal(t, "203.0.113.5", ipKey("::ffff:203.0.113.5"))
}

func detailsOf(t *testing.T, e store.AuditEvent) map[string]any {
	t.Helper()
	var d map[string]any
	require.NoError(t, json.Unmarshal(e.Details, &d))
	return d
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// countingStore counts the audit writes the API makes.
type countingStore struct {
	*store.Store
	writes atomic.Int64
}

func (c *countingStore) RecordAudit(ctx context.Context, e store.AuditEvent) error {
	c.writes.Add(1)
	return c.Store.RecordAudit(ctx, e)
}

func (c *countingStore) RecordAudits(ctx context.Context, es []store.AuditEvent) error {
	c.writes.Add(1)
	return c.Store.RecordAudits(ctx, es)
}

// An anonymous flood of bad tokens must not write to the audit chain (and take
// its global lock) once per request: it is counted, and written as one event
// per source address when the window ends.
func TestAnonymousFloodIsAggregated(t *testing.T) {
	ctx := context.Background()
	st := openPostgres(t, storetest.MigratedPostgres(t))
	cs := &countingStore{Store: st}
	log := logrus.New()
	log.SetOutput(io.Discard)
	reg := prometheus.NewRegistry()
	srv, err := New(cs, bus.NewMemory(), newJWT(t), reg, log, Config{})
	require.NoError(t, err)
	a := &secAPI{t: t, srv: srv, st: st, jwt: newJWT(t), tokens: map[auth.Role]string{}}
	tok, err := a.jwt.Issue("operator-user", auth.RoleOperator, time.Hour)
	require.NoError(t, err)
	a.tokens[auth.RoleOperator] = tok
	require.NoError(t, st.MarkAgentOnline(ctx, store.AgentSession{ID: "flood-1", Capabilities: []string{"echo"}, GatewayID: "g", SessionID: "s", At: time.Now()}))
	post := func() time.Duration {
		start := time.Now()
		w := a.req("operator", "POST", "/api/v1/commands", `{"verb":"echo","agent_targets":["flood-1"]}`)
		require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
		return time.Since(start)
	}
	var quiet time.Duration
	for range 10 {
		quiet += post()
	}
	writesBefore := cs.writes.Load()

	const flood = 2000
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range flood / 4 {
				addr := fmt.Sprintf("198.51.100.%d:1234", 1+w%2)
				assert.Equal(t, http.StatusUnauthorized, a.req("Bearer forged-"+strconv.Itoa(i), "GET", "/api/v1/agents", "", "RemoteAddr", addr).Code)
			}
		}()
	}
	var during time.Duration
	for range 10 {
		during += post()
	}
	wg.Wait()
	t.Logf("POST /commands: %v mean before the flood, %v during it", quiet/10, during/10)
	// No audit write for the 2,000 failures (commands audit inside their own transaction, not through these methods).
	require.Equal(t, writesBefore, cs.writes.Load(), "the flood wrote audit events on the request path")
	require.Empty(t, a.auditActions("auth.failure"))

	require.NoError(t, srv.refusals.Flush(ctx))
	require.Equal(t, writesBefore+1, cs.writes.Load(), "one batch for the window")
	fails := a.auditActions("auth.failure")
	require.Len(t, fails, 2, "one event per source address")
	var total float64
	for _, e := range fails {
		total += detailsOf(t, e)["count"].(float64)
	}
	require.EqualValues(t, flood, total)
	require.InDelta(t, flood, testutil.ToFloat64(srv.authFailures.WithLabelValues("invalid or expired token")), 0)
}

// GET /audit/verify compares the table with the head kept outside it: rows
// deleted from the end by a superuser are reported as truncation, and the
// head it returns is signed with the audit key.
func TestAuditVerifyReportsTruncation(t *testing.T) {
	ctx := context.Background()
	url := storetest.MigratedPostgres(t)
	st := openPostgres(t, url)
	heads := audithead.NewFile(filepath.Join(t.TempDir(), "audit-head.json"))
	a := newSecAPI(t, st, Config{AuditHeads: heads})
	for i := range 4 {
		require.NoError(t, st.RecordAudit(ctx, store.AuditEvent{Actor: "admin", Action: "test.verify", Target: strconv.Itoa(i)}))
	}
	v := decode[store.AuditVerification](t, a.req("admin", "GET", "/api/v1/audit/verify", ""))
	require.True(t, v.OK, "%+v", v)
	require.Nil(t, v.Kept)
	require.NoError(t, st.CheckAuditHead(v.Head))
	w, err := audithead.New(st, heads, logrus.New(), audithead.Config{})
	require.NoError(t, err)
	require.NoError(t, w.Tick(ctx, time.Now()))

	db, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer db.Close()
	for _, q := range []string{`ALTER TABLE audit_events DISABLE TRIGGER USER`, `DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)`, `ALTER TABLE audit_events ENABLE TRIGGER USER`} {
		_, err = db.Exec(q)
		require.NoError(t, err)
	}
	v = decode[store.AuditVerification](t, a.req("admin", "GET", "/api/v1/audit/verify", ""))
	require.False(t, v.OK)
	require.True(t, v.Truncated)
	require.NotNil(t, v.Kept)
	require.EqualValues(t, 4, v.Kept.Count)
	require.EqualValues(t, 3, v.Head.Count)
}
