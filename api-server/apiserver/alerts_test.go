package apiserver

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/egress"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

type alertAPI struct {
	t      *testing.T
	srv    *Server
	st     *store.Store
	dbPath string
	tokens map[auth.Role]string
}

func newAlertAPI(t *testing.T) *alertAPI {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "viworks.db")
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: store.SQLitePrefix + path})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	jwt, err := auth.NewJWT(auth.Config{Secret: []byte(strings.Repeat("k", 48)), Issuer: "viworks-test", Audience: "viworks-api"})
	require.NoError(t, err)
	log := logrus.New()
	log.SetOutput(io.Discard)
	allowed, err := egress.NewPolicy([]string{"10.0.0.0/8"}) // as alerts.webhook_allowed_cidrs
	require.NoError(t, err)
	srv, err := New(st, bus.NewMemory(), jwt, prometheus.NewRegistry(), log, Config{Webhooks: allowed, Resolver: testResolver{}})
	require.NoError(t, err)
	api := &alertAPI{t: t, srv: srv, st: st, dbPath: path, tokens: map[auth.Role]string{}}
	for _, r := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
		tok, err := jwt.Issue(string(r)+"-user", r, time.Hour)
		require.NoError(t, err)
		api.tokens[r] = tok
	}
	return api
}

// testResolver resolves the test's names without DNS: *.loopback.test to
// 127.0.0.1, *.metadata.test to 169.254.169.254, *.public.test to a public
// address; anything else does not resolve.
type testResolver struct{}

func (testResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	switch {
	case strings.HasSuffix(host, ".loopback.test"):
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	case strings.HasSuffix(host, ".metadata.test"):
		return []netip.Addr{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("169.254.169.254")}, nil
	case strings.HasSuffix(host, ".public.test"):
		return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// do sends a request as role ("" for none) and returns the recorder.
func (a *alertAPI) do(role auth.Role, method, path, body string) *httptest.ResponseRecorder {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+a.tokens[role])
	}
	req.Header.Set("X-Request-ID", "req-"+strings.ToLower(method))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return serve(a.t, a.srv.Handler(), req)
}

func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &v), w.Body.String())
	return v
}

// problemFields checks a problem+json answer and returns its field names.
func problemFields(t *testing.T, w *httptest.ResponseRecorder, code int) []string {
	t.Helper()
	require.Equal(t, code, w.Code, w.Body.String())
	require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
	p := decode[Problem](t, w)
	require.Equal(t, code, p.Status)
	out := []string{}
	for _, e := range p.Errors {
		out = append(out, e.Field)
	}
	return out
}

func TestAlertRoutesRoles(t *testing.T) {
	a := newAlertAPI(t)
	admin := []struct{ method, path, body string }{
		{http.MethodGet, "/api/v1/alert-rules", ""},
		{http.MethodPost, "/api/v1/alert-rules", `{"name":"x","kind":"agent_offline","params":{"seconds":1}}`},
		{http.MethodDelete, "/api/v1/alert-rules/00000000-0000-0000-0000-000000000000", ""},
		{http.MethodGet, "/api/v1/webhooks", ""},
		{http.MethodPost, "/api/v1/webhooks", `{"url":"https://example.test/hook"}`},
		{http.MethodDelete, "/api/v1/webhooks/00000000-0000-0000-0000-000000000000", ""},
		{http.MethodGet, "/api/v1/webhooks/00000000-0000-0000-0000-000000000000/deliveries", ""},
	}
	for _, r := range admin {
		problemFields(t, a.do("", r.method, r.path, r.body), http.StatusUnauthorized)
		problemFields(t, a.do(auth.RoleViewer, r.method, r.path, r.body), http.StatusForbidden)
		problemFields(t, a.do(auth.RoleOperator, r.method, r.path, r.body), http.StatusForbidden)
	}
	rules, _, err := a.st.ListAlertRules(context.Background(), store.Page{})
	require.NoError(t, err)
	require.Empty(t, rules, "nothing was created by a forbidden request")

	problemFields(t, a.do("", http.MethodGet, "/api/v1/alerts", ""), http.StatusUnauthorized)
	for _, role := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
		w := a.do(role, http.MethodGet, "/api/v1/alerts", "")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.JSONEq(t, `{"items":[],"next_cursor":null}`, w.Body.String())
	}
}

func TestAlertRulesAPI(t *testing.T) {
	a := newAlertAPI(t)
	ctx := context.Background()
	w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/alert-rules",
		`{"name":"prod offline","kind":"agent_offline","params":{"seconds":120,"selector":{"site":"prod"}}}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	created := decode[AlertRuleView](t, w)
	require.Equal(t, "/api/v1/alert-rules/"+created.ID, w.Header().Get("Location"))
	require.Equal(t, "prod offline", created.Name)
	require.Equal(t, "agent_offline", created.Kind)
	require.True(t, created.Enabled)
	require.Equal(t, "admin-user", created.CreatedBy)
	require.JSONEq(t, `{"seconds":120,"selector":{"site":"prod"}}`, string(created.Params))

	w = a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/alert-rules",
		`{"name":"cpu","kind":"metric_threshold","params":{"metric":"cpu_percent","threshold":90,"for_seconds":300},"enabled":false}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	cpu := decode[AlertRuleView](t, w)
	require.False(t, cpu.Enabled)

	// Validation, each naming the field.
	bad := []struct {
		body   string
		code   int
		fields []string
	}{
		{`{"name":"a","kind":"agent_offline","params":{"seconds":1},"extra":1}`, 400, []string{"body"}},
		{`{"name":"a","kind":"agent_offline","params":{"seconds":1}} {}`, 400, []string{"body"}},
		{`not json`, 400, []string{"body"}},
		{``, 400, []string{"body"}},
		{`{"name":5,"kind":"agent_offline"}`, 400, []string{"body"}},
		{`{"kind":"agent_offline","params":{"seconds":1}}`, 400, []string{"name"}},
		{`{"name":"` + strings.Repeat("n", 129) + `","kind":"agent_offline","params":{"seconds":1}}`, 400, []string{"name"}},
		{`{"name":"bad\nname","kind":"agent_offline","params":{"seconds":1}}`, 400, []string{"name"}},
		{`{"name":"a","params":{}}`, 400, []string{"kind"}},
		{`{"name":"a","kind":"disk_full","params":{}}`, 400, []string{"kind"}},
		{`{"name":"a","kind":"agent_offline","params":{}}`, 400, []string{"params.seconds"}},
		{`{"name":"a","kind":"agent_offline","params":{"seconds":1,"secs":2}}`, 400, []string{"params"}},
		{`{"name":"a","kind":"metric_threshold","params":{"metric":"cpu","threshold":1}}`, 400, []string{"params.for_seconds"}},
		{`{"name":"a","kind":"command_failure_rate","params":{"window_seconds":60,"rate":1.5}}`, 400, []string{"params.rate"}},
		{`{"name":"a","kind":"agent_unhealthy","params":{"selector":{"labels":{"":"x"}}}}`, 400, []string{"params.selector.labels"}},
		{`{"name":"prod offline","kind":"agent_offline","params":{"seconds":1}}`, 409, []string{"name"}},
		{`{"name":"a","kind":"agent_offline","params":{"seconds":1},"pad":"` + strings.Repeat("x", 70<<10) + `"}`, 413, []string{}},
	}
	for _, tc := range bad {
		w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/alert-rules", tc.body)
		require.Equal(t, tc.fields, problemFields(t, w, tc.code), "body %.80s", tc.body)
	}

	// List, paged.
	w = a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/alert-rules?limit=1", "")
	require.Equal(t, http.StatusOK, w.Code)
	page := decode[List[AlertRuleView]](t, w)
	require.Len(t, page.Items, 1)
	require.Equal(t, created.ID, page.Items[0].ID)
	require.NotNil(t, page.NextCursor)
	w = a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/alert-rules?limit=1&cursor="+*page.NextCursor, "")
	require.Equal(t, http.StatusOK, w.Code)
	page = decode[List[AlertRuleView]](t, w)
	require.Len(t, page.Items, 1)
	require.Equal(t, cpu.ID, page.Items[0].ID)
	require.Nil(t, page.NextCursor)
	require.Equal(t, []string{"limit"}, problemFields(t, a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/alert-rules?limit=0", ""), 400))
	require.Equal(t, []string{"cursor"}, problemFields(t, a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/alert-rules?cursor=zzz", ""), 400))

	// Delete.
	require.Equal(t, http.StatusNoContent, a.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/alert-rules/"+cpu.ID, "").Code)
	problemFields(t, a.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/alert-rules/"+cpu.ID, ""), http.StatusNotFound)
	problemFields(t, a.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/alert-rules/not-a-uuid", ""), http.StatusNotFound)
	w = a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/alert-rules", "")
	page = decode[List[AlertRuleView]](t, w)
	require.Len(t, page.Items, 1)

	// Audited with actor and request id.
	for action, want := range map[string]int64{"alert_rule.create": 2, "alert_rule.delete": 1} {
		n, err := a.st.CountAudit(ctx, action)
		require.NoError(t, err)
		require.Equal(t, want, n, action)
	}
	rows := a.audit("alert_rule.delete")
	require.Equal(t, auditRow{Actor: "admin-user", Target: cpu.ID, RequestID: "req-delete"}, rows[0].withoutDetails())
}

type auditRow struct {
	Actor, Target, RequestID, Details string
}

func (r auditRow) withoutDetails() auditRow { r.Details = ""; return r }

// audit reads audit events of one action straight from the database.
func (a *alertAPI) audit(action string) []auditRow {
	a.t.Helper()
	db, err := sql.Open("sqlite", a.dbPath) // the pure-Go driver the store registers
	require.NoError(a.t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT actor, target, request_id, details FROM audit_events WHERE action = ? ORDER BY id`, action)
	require.NoError(a.t, err)
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		require.NoError(a.t, rows.Scan(&r.Actor, &r.Target, &r.RequestID, &r.Details))
		out = append(out, r)
	}
	require.NoError(a.t, rows.Err())
	return out
}

func TestAlertsListAPI(t *testing.T) {
	a := newAlertAPI(t)
	ctx := context.Background()
	rule, err := a.st.CreateAlertRule(ctx, store.NewAlertRule{Name: "off", Kind: store.AlertAgentOffline, Params: store.JSON(`{"seconds":1}`), Enabled: true, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "alert_rule.create"}})
	require.NoError(t, err)
	t0 := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	_, err = a.st.SyncAlerts(ctx, rule, []store.Violation{{Subject: "a1", Details: store.JSON(`{"x":1}`)}, {Subject: "a2"}}, t0, 0, nil)
	require.NoError(t, err)
	_, err = a.st.SyncAlerts(ctx, rule, []store.Violation{{Subject: "a2"}, {Subject: "a3"}}, t0.Add(time.Minute), 0, nil)
	require.NoError(t, err)

	w := a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?state=firing", "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	firing := decode[List[AlertView]](t, w)
	require.Len(t, firing.Items, 2)
	require.Equal(t, "a3", firing.Items[0].Subject, "newest first")
	require.Equal(t, "firing", firing.Items[0].State)
	require.Equal(t, "off", firing.Items[0].RuleName)

	w = a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?state=resolved&rule_id="+rule.ID, "")
	resolved := decode[List[AlertView]](t, w)
	require.Len(t, resolved.Items, 1)
	require.Equal(t, "a1", resolved.Items[0].Subject)
	require.Equal(t, "resolved", resolved.Items[0].State)
	require.JSONEq(t, `{"x":1}`, string(resolved.Items[0].Details))
	require.True(t, resolved.Items[0].ResolvedAt.Equal(t0.Add(time.Minute)))

	// Paging through all three.
	var seen []string
	path := "/api/v1/alerts?limit=2"
	for range 3 {
		w = a.do(auth.RoleViewer, http.MethodGet, path, "")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		l := decode[List[AlertView]](t, w)
		for _, it := range l.Items {
			seen = append(seen, it.Subject)
		}
		if l.NextCursor == nil {
			break
		}
		path = "/api/v1/alerts?limit=2&cursor=" + *l.NextCursor
	}
	require.Len(t, seen, 3)
	require.Equal(t, "a3", seen[0], "newest first")
	require.ElementsMatch(t, []string{"a1", "a2"}, seen[1:], "fired together; each listed once")

	w = a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?rule_id=00000000-0000-0000-0000-000000000000", "")
	require.JSONEq(t, `{"items":[],"next_cursor":null}`, w.Body.String())
	require.Equal(t, []string{"state"}, problemFields(t, a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?state=open", ""), 400))
	require.Equal(t, []string{"rule_id"}, problemFields(t, a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?rule_id=nope", ""), 400))
	require.Equal(t, []string{"limit", "state"}, problemFields(t, a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?limit=5000&state=x", ""), 400))
	require.Equal(t, []string{"cursor"}, problemFields(t, a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?cursor="+strings.Repeat("a", 600), ""), 400))
	require.Equal(t, []string{"cursor"}, problemFields(t, a.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?cursor=bm9wZQ", ""), 400))
}

func TestWebhooksAPI(t *testing.T) {
	a := newAlertAPI(t)
	ctx := context.Background()

	// A secret is generated when none is given, and shown once.
	w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", `{"url":"https://hooks.example.test/alerts?token=tok-123"}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	require.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	gen := decode[WebhookView](t, w)
	require.Equal(t, "/api/v1/webhooks/"+gen.ID, w.Header().Get("Location"))
	raw, err := hex.DecodeString(gen.Secret)
	require.NoError(t, err)
	require.Len(t, raw, 32)
	require.True(t, gen.Enabled)

	given := "my-own-secret-value-1234"
	w = a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", `{"url":"http://10.1.2.3:9/x","secret":"`+given+`","enabled":false}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	own := decode[WebhookView](t, w)
	require.Equal(t, given, own.Secret)
	require.False(t, own.Enabled)

	bad := []struct {
		body   string
		fields []string
	}{
		{`{}`, []string{"url"}},
		{`{"url":"ftp://example.test/x"}`, []string{"url"}},
		{`{"url":"/relative"}`, []string{"url"}},
		{`{"url":"https://"}`, []string{"url"}},
		{`{"url":"https://example.test/a b"}`, []string{"url"}},
		{`{"url":"https://example.test/` + strings.Repeat("p", 2048) + `"}`, []string{"url"}},
		{`{"url":"https://example.test/x","secret":"short"}`, []string{"secret"}},
		{`{"url":"https://example.test/x","secret":"` + strings.Repeat("s", 257) + `"}`, []string{"secret"}},
		{`{"url":"ftp://x","secret":""}`, []string{"url", "secret"}},
		{`{"url":"https://example.test/x","name":"x"}`, []string{"body"}},
		{`{"url":"https://user:hunter2pass@example.test/x"}`, []string{"url"}},
	}
	for _, tc := range bad {
		require.Equal(t, tc.fields, problemFields(t, a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", tc.body), 400), tc.body)
	}
	// 2048 bytes exactly is fine.
	long := "https://example.test/" + strings.Repeat("p", 2048-len("https://example.test/"))
	require.Equal(t, http.StatusCreated, a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", `{"url":"`+long+`"}`).Code)

	// Lists never carry a secret; a password in the URL is masked.
	w = a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks", "")
	require.Equal(t, http.StatusOK, w.Code)
	require.NotContains(t, w.Body.String(), gen.Secret)
	require.NotContains(t, w.Body.String(), given)
	require.NotContains(t, w.Body.String(), `"secret"`)
	require.NotContains(t, w.Body.String(), "hunter2pass")
	list := decode[List[WebhookView]](t, w)
	require.Len(t, list.Items, 3)
	require.Equal(t, gen.ID, list.Items[0].ID)
	require.Equal(t, "https://hooks.example.test/alerts?token=tok-123", list.Items[0].URL)
	require.Equal(t, "http://10.1.2.3:9/x", list.Items[1].URL, "an allow-listed private address")

	// Audit: actor, request id, no secret (nor the URL's query or password).
	rows := a.audit("webhook.create")
	require.Len(t, rows, 3)
	require.Equal(t, "admin-user", rows[0].Actor)
	require.Equal(t, gen.ID, rows[0].Target)
	require.Equal(t, "req-post", rows[0].RequestID)
	for _, r := range rows {
		for _, leak := range []string{gen.Secret, given, "hunter2pass", "tok-123"} {
			require.NotContains(t, r.Details, leak)
		}
	}
	require.JSONEq(t, `{"url":"https://hooks.example.test/alerts","enabled":true,"secret_generated":true}`, rows[0].Details)

	// Deliveries of a webhook.
	rule, err := a.st.CreateAlertRule(ctx, store.NewAlertRule{Name: "f", Kind: store.AlertCommandFailureRate, Params: store.JSON(`{"window_seconds":60,"rate":0.1}`), Enabled: true, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "alert_rule.create"}})
	require.NoError(t, err)
	payload := func(event string, _ store.AlertRule, al store.Alert) (store.JSON, error) {
		return json.Marshal(map[string]string{"event": event, "alert": al.ID})
	}
	res, err := a.st.SyncAlerts(ctx, rule, []store.Violation{{Subject: store.SubjectGlobal}}, time.Now(), 0, payload)
	require.NoError(t, err)
	w = a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks/"+gen.ID+"/deliveries", "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	ds := decode[List[DeliveryView]](t, w)
	require.Len(t, ds.Items, 1)
	require.Equal(t, "pending", ds.Items[0].Status)
	require.Equal(t, "alert.fired", ds.Items[0].Event)
	require.Equal(t, res.Opened[0].ID, ds.Items[0].AlertID)
	require.JSONEq(t, `{"event":"alert.fired","alert":"`+res.Opened[0].ID+`"}`, string(ds.Items[0].Payload))
	require.NotContains(t, w.Body.String(), gen.Secret)
	w = a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks/"+own.ID+"/deliveries", "")
	require.JSONEq(t, `{"items":[],"next_cursor":null}`, w.Body.String(), "a disabled webhook gets no deliveries")
	problemFields(t, a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks/00000000-0000-0000-0000-000000000000/deliveries", ""), 404)
	problemFields(t, a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks/x/deliveries", ""), 404)
	require.Equal(t, []string{"limit"}, problemFields(t, a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks/"+gen.ID+"/deliveries?limit=-1", ""), 400))

	// Delete.
	require.Equal(t, http.StatusNoContent, a.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/webhooks/"+gen.ID, "").Code)
	problemFields(t, a.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/webhooks/"+gen.ID, ""), 404)
	problemFields(t, a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks/"+gen.ID+"/deliveries", ""), 404)
	n, err := a.st.CountAudit(ctx, "webhook.delete")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	list = decode[List[WebhookView]](t, a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks", ""))
	require.Len(t, list.Items, 2)
}

// TestWebhookTargetsRefused: webhooks cannot be pointed at this host, the
// cloud metadata service or private networks (SSRF); 422 naming url.
func TestWebhookTargetsRefused(t *testing.T) {
	a := newAlertAPI(t)
	for _, u := range []string{
		"http://127.0.0.1:8080/x",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::1]:8080/x",
		"http://[fe80::1]/x",
		"http://192.168.1.10/x",
		"http://172.16.0.1/x",
		"http://100.64.0.1/x",
		"http://0.0.0.0:8080/x",
		"http://[::ffff:127.0.0.1]/x",
		"http://localhost:8080/x",
		"http://hook.loopback.test/x",
		"http://hook.metadata.test/x",
	} {
		w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", `{"url":"`+u+`"}`)
		require.Equal(t, []string{"url"}, problemFields(t, w, http.StatusUnprocessableEntity), u)
	}
	// Public addresses and the allow-listed 10.0.0.0/8 are accepted.
	for _, u := range []string{"https://hook.public.test/x", "http://10.0.0.7:9000/x", "https://93.184.216.34/x"} {
		w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", `{"url":"`+u+`"}`)
		require.Equal(t, http.StatusCreated, w.Code, u+": "+w.Body.String())
	}
	n, err := a.st.CountAudit(context.Background(), "webhook.create")
	require.NoError(t, err)
	require.Equal(t, int64(3), n, "refused webhooks are not created")
}

func TestWebhookURLHelpers(t *testing.T) {
	require.Equal(t, "https://h.test/p", auditURL("https://u:p@h.test/p?token=x#f"))
	require.Equal(t, "https://u:xxxxx@h.test/p?token=x", maskURL("https://u:p@h.test/p?token=x"))
	var buf bytes.Buffer
	require.NoError(t, json.NewEncoder(&buf).Encode(webhookView(store.Webhook{ID: "i", URL: "https://h.test", Secret: "sss-secret"})))
	require.NotContains(t, buf.String(), "sss-secret")
}

// FuzzDecodeWebhookRequest: webhook bodies are untrusted; decoding and
// validation never panic, and an accepted URL is http(s), at most 2048 bytes.
func FuzzDecodeWebhookRequest(f *testing.F) {
	for _, seed := range []string{`{"url":"https://example.test/x"}`, `{"url":"http://u:p@[::1]:80/x?y#z","secret":"0123456789abcdef"}`,
		`{"url":"ftp://x"}`, `{"url":"https://%zz"}`, `{"url":"http://\u0000"}`, `{}`, `[]`, `{"url":1}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req WebhookRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		secret, errs := validateWebhook(req)
		if len(errs) > 0 {
			return
		}
		if len(req.URL) > maxWebhookURLLen || !(strings.HasPrefix(req.URL, "http://") || strings.HasPrefix(req.URL, "https://")) {
			t.Fatalf("accepted %q", req.URL)
		}
		if len(secret) < minSecretLen || len(secret) > maxSecretLen {
			t.Fatalf("accepted a secret of %d bytes", len(secret))
		}
		_ = maskURL(req.URL)
		_ = auditURL(req.URL)
	})
}

// TestDatabaseOutageIs503: with the database gone, store failures answer 503
// problem+json with Retry-After (clients retry), never a 500 or a hang.
func TestDatabaseOutageIs503(t *testing.T) {
	a := newAlertAPI(t)
	require.NoError(t, a.st.Close())
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodGet, "/api/v1/commands/7a1e1c8e-2f7c-4e43-9d3c-1d0f6f1b2a11", ""},
		{http.MethodGet, "/api/v1/agents", ""},
		{http.MethodPost, "/api/v1/commands", `{"verb":"echo","agent_targets":["a-1"]}`},
		{http.MethodGet, "/api/v1/alert-rules", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			w := a.do(auth.RoleAdmin, tc.method, tc.path, tc.body)
			problemFields(t, w, http.StatusServiceUnavailable)
			require.Equal(t, "2", w.Header().Get("Retry-After"))
			require.Contains(t, decode[Problem](t, w).Detail, "database is unavailable")
		})
	}
}
