package alerting_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
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
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/egress"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
	"github.com/viworks/backend-agent/scheduler/alerting"
)

const secret = "receiver-secret-0123456789"

// eachStore runs fn on a migrated Postgres and a migrated SQLite store.
func eachStore(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	urls := map[string]func(t *testing.T) string{
		store.Postgres: func(t *testing.T) string { return storetest.MigratedPostgres(t) },
		store.SQLite:   func(t *testing.T) string { return store.SQLitePrefix + filepath.Join(t.TempDir(), "viworks.db") },
	}
	for _, name := range []string{store.SQLite, store.Postgres} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: urls[name](t), MaxConns: 8})
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close() })
			_, err = s.Migrate(ctx)
			require.NoError(t, err)
			fn(t, s)
		})
	}
}

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// receiver is a real HTTP webhook receiver on loopback that checks every
// request's signature and answers from a script (then 200).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string

	mu      sync.Mutex
	script  []int
	events  []alerting.Event
	headers []http.Header
	hits    atomic.Int32
	badSigs atomic.Int32
	body    string // answered with every response
}

func newReceiver(t *testing.T, secret string, script ...int) *receiver {
	r := &receiver{t: t, secret: secret, script: script}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.hits.Add(1)
	body, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ts := req.Header.Get("X-Viworks-Timestamp")
	mac := hmac.New(sha256.New, []byte(r.secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || !hmac.Equal([]byte(want), []byte(req.Header.Get("X-Viworks-Signature"))) ||
		time.Since(time.Unix(sec, 0)).Abs() > time.Minute || req.Method != http.MethodPost ||
		req.Header.Get("Content-Type") != "application/json" {
		r.badSigs.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.mu.Lock()
	code := http.StatusOK
	if len(r.script) > 0 {
		code, r.script = r.script[0], r.script[1:]
	}
	if code/100 == 2 {
		var ev alerting.Event
		if json.Unmarshal(body, &ev) == nil {
			r.events = append(r.events, ev)
			r.headers = append(r.headers, req.Header.Clone())
		}
	}
	out := r.body
	r.mu.Unlock()
	w.WriteHeader(code)
	_, _ = io.WriteString(w, out)
}

func (r *receiver) got() []alerting.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alerting.Event(nil), r.events...)
}

// fastConfig retries quickly and allows the loopback receivers of these tests
// (as alerts.webhook_allowed_cidrs would): loopback is refused by default.
func fastConfig(t *testing.T) alerting.Config {
	allowLoopback, err := egress.NewPolicy([]string{"127.0.0.1/32", "::1"})
	require.NoError(t, err)
	return alerting.Config{HTTPTimeout: 2 * time.Second, RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond, Targets: allowLoopback}
}

func newAlerter(t *testing.T, s *store.Store, reg prometheus.Registerer) *alerting.Alerter {
	t.Helper()
	a, err := alerting.New(s, quiet(), reg, fastConfig(t))
	require.NoError(t, err)
	return a
}

func rule(t *testing.T, s *store.Store, name, kind, params string) store.AlertRule {
	t.Helper()
	r, err := s.CreateAlertRule(context.Background(), store.NewAlertRule{Name: name, Kind: kind, Params: store.JSON(params), Enabled: true, CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "alert_rule.create"}})
	require.NoError(t, err)
	return r
}

func hook(t *testing.T, s *store.Store, url, secret string) store.Webhook {
	t.Helper()
	w, err := s.CreateWebhook(context.Background(), store.NewWebhook{URL: url, Secret: secret, Enabled: true, CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "webhook.create"}})
	require.NoError(t, err)
	return w
}

func alertsOf(t *testing.T, s *store.Store, ruleID string) (firing, resolved []store.Alert) {
	t.Helper()
	ctx := context.Background()
	firing, _, err := s.ListAlerts(ctx, store.AlertFilter{State: store.AlertStateFiring, RuleID: ruleID, Page: store.Page{Limit: 1000}})
	require.NoError(t, err)
	resolved, _, err = s.ListAlerts(ctx, store.AlertFilter{State: store.AlertStateResolved, RuleID: ruleID, Page: store.Page{Limit: 1000}})
	require.NoError(t, err)
	return firing, resolved
}

func subjects(as []store.Alert) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.Subject)
	}
	return out
}

// metric reads one sample from the registry (0 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// step evaluates at now and checks the rule's firing subjects and the number
// of resolved alerts afterwards.
func step(t *testing.T, a *alerting.Alerter, s *store.Store, r store.AlertRule, now time.Time, firing []string, resolved int) {
	t.Helper()
	require.NoError(t, a.Evaluate(context.Background(), now))
	f, res := alertsOf(t, s, r.ID)
	require.Equal(t, firing, subjects(f), "firing at %s", now.Format(time.TimeOnly))
	require.Len(t, res, resolved, "resolved at %s", now.Format(time.TimeOnly))
}

func TestAgentOffline(t *testing.T) { eachStore(t, testAgentOffline) }

func testAgentOffline(t *testing.T, s *store.Store) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	a := newAlerter(t, s, reg)
	rcv := newReceiver(t, secret)
	hook(t, s, rcv.srv.URL+"/hooks/alerts", secret)
	r := rule(t, s, "offline-prod", store.AlertAgentOffline, `{"seconds":60,"selector":{"site":"prod"}}`)
	base := time.Now().UTC().Truncate(time.Second)
	up := func(id, site string, at time.Time) {
		require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: id, Site: site, GatewayID: "gw", SessionID: "s-" + id, At: at}))
		// Alert selectors match the trusted site, which an admin sets.
		_, err := s.PatchAgentAttributes(ctx, id, store.AttributesPatch{Site: &site, MaxLabels: 32, Audit: store.AuditEvent{Actor: "admin", Action: "agent.update"}})
		require.NoError(t, err)
	}
	down := func(id string, at time.Time) {
		ok, err := s.MarkAgentOffline(ctx, id, "s-"+id, at)
		require.NoError(t, err)
		require.True(t, ok)
	}
	up("a1", "prod", base.Add(-time.Hour))
	up("lab1", "lab", base.Add(-time.Hour)) // not selected
	down("a1", base)
	down("lab1", base)

	step(t, a, s, r, base.Add(30*time.Second), []string{}, 0) // not long enough
	step(t, a, s, r, base.Add(61*time.Second), []string{"a1"}, 0)
	step(t, a, s, r, base.Add(120*time.Second), []string{"a1"}, 0) // no duplicate
	require.Equal(t, 1.0, metric(t, reg, "viworks_alerts_firing", nil))
	up("a1", "prod", base.Add(125*time.Second))
	step(t, a, s, r, base.Add(130*time.Second), []string{}, 1) // resolved
	require.Equal(t, 0.0, metric(t, reg, "viworks_alerts_firing", nil))
	down("a1", base.Add(200*time.Second))
	step(t, a, s, r, base.Add(230*time.Second), []string{}, 1)
	step(t, a, s, r, base.Add(300*time.Second), []string{"a1"}, 1) // fires again: a new alert
	require.Equal(t, 2.0, metric(t, reg, "viworks_alert_transitions_total", map[string]string{"kind": store.AlertAgentOffline, "event": "fired"}))
	require.Equal(t, 1.0, metric(t, reg, "viworks_alert_transitions_total", map[string]string{"kind": store.AlertAgentOffline, "event": "resolved"}))

	require.NoError(t, a.Deliver(ctx))
	evs := rcv.got()
	require.Len(t, evs, 3)
	require.Zero(t, rcv.badSigs.Load())
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Event)
		require.Equal(t, "a1", ev.Alert.Subject)
		require.Equal(t, r.ID, ev.Rule.ID)
		require.Equal(t, "offline-prod", ev.Rule.Name)
		require.Equal(t, store.AlertAgentOffline, ev.Alert.Kind)
		require.NotNil(t, ev.SentAt)
		require.JSONEq(t, `{"seconds":60,"selector":{"site":"prod"}}`, string(ev.Rule.Params))
	}
	require.ElementsMatch(t, []string{"alert.fired", "alert.resolved", "alert.fired"}, kinds)
	for _, ev := range evs {
		if ev.Event == "alert.resolved" {
			require.Equal(t, "resolved", ev.Alert.State)
			require.NotNil(t, ev.Alert.ResolvedAt)
		} else {
			require.Equal(t, "firing", ev.Alert.State)
		}
	}
	var d map[string]any
	require.NoError(t, json.Unmarshal(evs[0].Alert.Details, &d))
	require.Contains(t, d, "last_seen_at")
	require.Equal(t, 3.0, metric(t, reg, "viworks_webhook_deliveries_total", map[string]string{"outcome": "delivered"}))

	// Everything was sent: a second call sends nothing.
	require.NoError(t, a.Deliver(ctx))
	require.Len(t, rcv.got(), 3)
}

func TestAgentUnhealthy(t *testing.T) { eachStore(t, testAgentUnhealthy) }

func testAgentUnhealthy(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a := newAlerter(t, s, prometheus.NewRegistry())
	r := rule(t, s, "sick", store.AlertAgentUnhealthy, `{"seconds":30}`)
	base := time.Now().UTC().Truncate(time.Second)
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "u1", GatewayID: "gw", SessionID: "s1", At: base}))
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "ok", GatewayID: "gw", SessionID: "s2", At: base}))
	health := func(id, status string) {
		require.NoError(t, s.TouchAgents(ctx, []store.HealthUpdate{{AgentID: id, Status: status, At: time.Now()}}))
	}
	health("u1", "unhealthy")
	health("ok", "degraded")

	step(t, a, s, r, base, []string{}, 0)                     // first seen unhealthy
	step(t, a, s, r, base.Add(20*time.Second), []string{}, 0) // not for 30 s yet
	step(t, a, s, r, base.Add(31*time.Second), []string{"u1"}, 0)
	step(t, a, s, r, base.Add(60*time.Second), []string{"u1"}, 0) // no duplicate

	// A fresh alerter (restart, leader change) keeps the open alert open.
	b := newAlerter(t, s, prometheus.NewRegistry())
	step(t, b, s, r, base.Add(61*time.Second), []string{"u1"}, 0)

	health("u1", "healthy")
	step(t, b, s, r, base.Add(70*time.Second), []string{}, 1)
	health("u1", "unhealthy")
	step(t, b, s, r, base.Add(80*time.Second), []string{}, 1) // the wait starts again
	step(t, b, s, r, base.Add(111*time.Second), []string{"u1"}, 1)
	// Offline agents are not "unhealthy" (agent_offline covers them).
	_, err := s.MarkAgentOffline(ctx, "u1", "s1", base.Add(112*time.Second))
	require.NoError(t, err)
	step(t, b, s, r, base.Add(113*time.Second), []string{}, 2)
}

func TestMetricThreshold(t *testing.T) { eachStore(t, testMetricThreshold) }

func testMetricThreshold(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a := newAlerter(t, s, prometheus.NewRegistry())
	r := rule(t, s, "hot", store.AlertMetricThreshold, `{"metric":"cpu_percent","threshold":90,"for_seconds":60}`)
	base := time.Now().UTC().Truncate(time.Second)
	sample := func(agent string, at time.Duration, cpu float64) {
		require.NoError(t, s.InsertTelemetry(ctx, []store.TelemetrySample{{AgentID: agent, TS: base.Add(at), ReceivedAt: base.Add(at),
			Metrics: store.JSON(`{"cpu_percent":` + strconv.FormatFloat(cpu, 'f', -1, 64) + `,"mem_percent":10}`)}}))
	}
	sample("m1", -50*time.Second, 95)
	sample("m1", -10*time.Second, 96)
	sample("m2", -40*time.Second, 99)
	sample("m2", -30*time.Second, 89) // one sample below: never fires in this window

	step(t, a, s, r, base, []string{"m1"}, 0)
	step(t, a, s, r, base.Add(5*time.Second), []string{"m1"}, 0) // same samples: no duplicate
	sample("m1", 20*time.Second, 50)
	step(t, a, s, r, base.Add(25*time.Second), []string{}, 1) // a low sample in the window
	sample("m1", 100*time.Second, 99)
	sample("m1", 110*time.Second, 97.5)
	step(t, a, s, r, base.Add(115*time.Second), []string{"m1"}, 1) // window (55s, 115s]: fires again
	step(t, a, s, r, base.Add(500*time.Second), []string{}, 2)     // no samples at all: not firing
	f, res := alertsOf(t, s, r.ID)
	require.Empty(t, f)
	var d map[string]any
	require.NoError(t, json.Unmarshal(res[0].Details, &d))
	require.Equal(t, map[string]any{"metric": "cpu_percent", "threshold": 90.0, "for_seconds": 60.0, "samples": 2.0, "min": 97.5, "max": 99.0}, d)
}

func TestCommandFailureRate(t *testing.T) { eachStore(t, testCommandFailureRate) }

func testCommandFailureRate(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a := newAlerter(t, s, prometheus.NewRegistry())
	r := rule(t, s, "failing", store.AlertCommandFailureRate, `{"window_seconds":60,"rate":0.5,"min_executions":2}`)
	base := time.Now().UTC().Truncate(time.Second)
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "runner", Capabilities: []string{"echo"}, GatewayID: "gw", SessionID: "s", At: base}))
	route := func(_ context.Context, ids []string) (map[string]string, error) {
		return map[string]string{ids[0]: "gw"}, nil
	}
	finish := func(status string, at time.Duration) {
		_, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"runner"}}, TTLSeconds: 600, TimeoutSeconds: 600, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
		require.NoError(t, err)
		due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 1}, route)
		require.NoError(t, err)
		require.Len(t, due, 1)
		_, ok, err := s.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: "runner", Status: status, FinishedAt: base.Add(at)})
		require.NoError(t, err)
		require.True(t, ok)
	}
	finish("failed", -10*time.Second)
	step(t, a, s, r, base, []string{}, 0) // 1/1 failed, but fewer than min_executions
	finish("failed", -5*time.Second)
	finish("succeeded", -20*time.Second)
	step(t, a, s, r, base, []string{"global"}, 0)                     // 2/3 > 0.5
	step(t, a, s, r, base.Add(10*time.Second), []string{"global"}, 0) // still: no duplicate
	finish("succeeded", 15*time.Second)
	step(t, a, s, r, base.Add(20*time.Second), []string{}, 1) // 2/4 is not above 0.5
	finish("failed", 200*time.Second)
	finish("failed", 201*time.Second)
	step(t, a, s, r, base.Add(210*time.Second), []string{"global"}, 1) // fires again
	step(t, a, s, r, base.Add(400*time.Second), []string{}, 2)         // nothing finished: resolved
}

// One alert, one delivery per webhook, each receiver behaving differently.
func TestDeliveryRetries(t *testing.T) { eachStore(t, testDeliveryRetries) }

func testDeliveryRetries(t *testing.T, s *store.Store) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	a := newAlerter(t, s, reg)
	flaky := newReceiver(t, secret, 500, 500, 200)
	down := newReceiver(t, secret, 500, 500, 500, 500, 500)
	bad := newReceiver(t, secret, 400)
	chatty := newReceiver(t, secret)
	chatty.body = strings.Repeat("x", 2000)
	wrongKey := newReceiver(t, "another-secret")
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL + "/hook?token=tok-abc"
	gone.Close()

	hooks := map[string]store.Webhook{
		"flaky":    hook(t, s, flaky.srv.URL, secret),
		"down":     hook(t, s, down.srv.URL, secret),
		"bad":      hook(t, s, bad.srv.URL, secret),
		"chatty":   hook(t, s, chatty.srv.URL, secret),
		"wrongKey": hook(t, s, wrongKey.srv.URL, secret),
		"gone":     hook(t, s, goneURL, secret),
	}
	rule(t, s, "any-offline", store.AlertAgentOffline, `{"seconds":0}`)
	now := time.Now().UTC()
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "a", GatewayID: "gw", SessionID: "s", At: now.Add(-time.Minute)}))
	_, err := s.MarkAgentOffline(ctx, "a", "s", now.Add(-time.Second))
	require.NoError(t, err)
	require.NoError(t, a.Evaluate(ctx, now))
	require.NoError(t, a.Deliver(ctx))

	delivery := func(name string) store.WebhookDelivery {
		ds, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: hooks[name].ID})
		require.NoError(t, err)
		require.Len(t, ds, 1, name)
		return ds[0]
	}
	d := delivery("flaky")
	require.Equal(t, store.DeliveryDelivered, d.Status)
	require.Equal(t, 3, d.Attempts)
	require.Equal(t, 200, *d.ResponseCode)
	require.NotNil(t, d.DeliveredAt)
	require.Len(t, flaky.got(), 1)
	require.Equal(t, d.ID, flaky.headers[0].Get("X-Viworks-Delivery"))
	require.Equal(t, "alert.fired", flaky.headers[0].Get("X-Viworks-Event"))

	d = delivery("down")
	require.Equal(t, store.DeliveryFailed, d.Status)
	require.Equal(t, 3, d.Attempts, "RetryMax+1")
	require.Equal(t, int32(3), down.hits.Load())
	require.Equal(t, 500, *d.ResponseCode)
	require.Contains(t, d.LastError, "500")

	d = delivery("bad")
	require.Equal(t, store.DeliveryFailed, d.Status)
	require.Equal(t, 1, d.Attempts, "4xx is not retried")
	require.Equal(t, int32(1), bad.hits.Load())
	require.Equal(t, 400, *d.ResponseCode)

	d = delivery("chatty")
	require.Equal(t, store.DeliveryDelivered, d.Status)
	require.Empty(t, d.ResponseBody, "the answer's body is not kept by default")
	require.Equal(t, int64(2000), *d.ResponseBytes, "only its size")

	d = delivery("wrongKey")
	require.Equal(t, store.DeliveryFailed, d.Status, "the receiver refuses a signature made with another secret")
	require.Equal(t, int32(1), wrongKey.badSigs.Load())
	require.Equal(t, 401, *d.ResponseCode)

	d = delivery("gone")
	require.Equal(t, store.DeliveryFailed, d.Status)
	require.Equal(t, 3, d.Attempts, "connection errors are retried")
	require.Nil(t, d.ResponseCode)
	require.NotEmpty(t, d.LastError)
	require.NotContains(t, d.LastError, "tok-abc", "no URL (or token in it) in the log")
	require.NotContains(t, d.LastError, secret)

	require.Equal(t, 2.0, metric(t, reg, "viworks_webhook_deliveries_total", map[string]string{"outcome": "delivered"}))
	require.Equal(t, 4.0, metric(t, reg, "viworks_webhook_deliveries_total", map[string]string{"outcome": "failed"}))

	// Failed is final: nothing is sent again.
	require.NoError(t, a.Deliver(ctx))
	require.Equal(t, int32(3), down.hits.Load())
}

// With StoreResponseBody, at most 512 bytes of the answer are kept.
func TestDeliveryStoresResponseBodyWhenConfigured(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		cfg := fastConfig(t)
		cfg.StoreResponseBody = true
		a, err := alerting.New(s, quiet(), nil, cfg)
		require.NoError(t, err)
		chatty := newReceiver(t, secret)
		chatty.body = strings.Repeat("x", 2000)
		h := hook(t, s, chatty.srv.URL, secret)
		fire(t, s, a)
		require.NoError(t, a.Deliver(ctx))
		ds, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: h.ID})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		require.Equal(t, strings.Repeat("x", 512), ds[0].ResponseBody)
		require.Equal(t, int64(2000), *ds[0].ResponseBytes)
	})
}

// fire opens one agent_offline alert, queueing a delivery to every webhook.
func fire(t *testing.T, s *store.Store, a *alerting.Alerter) {
	t.Helper()
	ctx := context.Background()
	rule(t, s, "any-offline", store.AlertAgentOffline, `{"seconds":0}`)
	now := time.Now().UTC()
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "a", GatewayID: "gw", SessionID: "s", At: now.Add(-time.Minute)}))
	_, err := s.MarkAgentOffline(ctx, "a", "s", now.Add(-time.Second))
	require.NoError(t, err)
	require.NoError(t, a.Evaluate(ctx, now))
}

// TestDeliveryRefusedAtDialTime: a webhook stored with a name that resolves
// to loopback (as after DNS rebinding: the name was public when created) gets
// no connection; the refusal is final, not retried.
func TestDeliveryRefusedAtDialTime(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		cfg := fastConfig(t)
		cfg.Targets = nil // the default: public addresses only
		a, err := alerting.New(s, quiet(), nil, cfg)
		require.NoError(t, err)
		r := newReceiver(t, secret)
		_, port, err := net.SplitHostPort(r.srv.Listener.Addr().String())
		require.NoError(t, err)
		metadata := hook(t, s, "http://169.254.169.254/latest/meta-data/", secret)
		rebound := hook(t, s, "http://localhost:"+port+"/hook", secret)
		fire(t, s, a)
		require.NoError(t, a.Deliver(ctx))
		for _, h := range []store.Webhook{rebound, metadata} {
			ds, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: h.ID})
			require.NoError(t, err)
			require.Len(t, ds, 1)
			require.Equal(t, store.DeliveryFailed, ds[0].Status)
			require.Equal(t, 1, ds[0].Attempts, "a refused target is not retried")
			require.Contains(t, ds[0].LastError, "not allowed")
			require.Nil(t, ds[0].ResponseCode)
		}
		require.Zero(t, r.hits.Load(), "the receiver on loopback got no request")
	})
}

// TestDeliveryRedirectNotFollowed: an allowed receiver redirecting to a
// refused address (here 127.0.0.2, not allow-listed) does not make the
// alerter call that address: the 3xx is a failed delivery.
func TestDeliveryRedirectNotFollowed(t *testing.T) {
	eachStore(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		a := newAlerter(t, s, nil)
		var inner atomic.Int32
		l, err := net.Listen("tcp", "127.0.0.2:0")
		require.NoError(t, err)
		target := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { inner.Add(1) }))
		target.Listener = l
		target.Start()
		t.Cleanup(target.Close)
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/internal", http.StatusTemporaryRedirect)
		}))
		t.Cleanup(redirector.Close)
		h := hook(t, s, redirector.URL, secret)
		fire(t, s, a)
		require.NoError(t, a.Deliver(ctx))
		ds, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: h.ID})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		require.Equal(t, store.DeliveryFailed, ds[0].Status)
		require.Equal(t, http.StatusTemporaryRedirect, *ds[0].ResponseCode)
		require.Zero(t, inner.Load(), "the redirect target got no request")
	})
}

// A Deliver call cut short leaves its delivery pending; the next call sends it.
func TestDeliveryInterrupted(t *testing.T) { eachStore(t, testDeliveryInterrupted) }

func testDeliveryInterrupted(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a := newAlerter(t, s, nil)
	var hang atomic.Bool
	hang.Store(true)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.ReadAll(r.Body) // the server notices the client leaving only once the body is read
		if hang.Load() {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h := hook(t, s, srv.URL, secret)
	rule(t, s, "failing", store.AlertCommandFailureRate, `{"window_seconds":60,"rate":0}`)
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "r", Capabilities: []string{"echo"}, GatewayID: "gw", SessionID: "s", At: time.Now()}))
	_, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"r"}}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "x"}})
	require.NoError(t, err)
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 1}, func(context.Context, []string) (map[string]string, error) { return map[string]string{"r": "gw"}, nil })
	require.NoError(t, err)
	now := time.Now().UTC()
	_, _, err = s.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: "r", Status: "failed", FinishedAt: now.Add(-time.Second)})
	require.NoError(t, err)
	require.NoError(t, a.Evaluate(ctx, now))

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_ = a.Deliver(short)
	ds, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: h.ID})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, store.DeliveryPending, ds[0].Status)
	require.Equal(t, 1, ds[0].Attempts)
	require.Contains(t, ds[0].LastError, "interrupted")

	hang.Store(false)
	require.NoError(t, a.Deliver(ctx))
	ds, _, err = s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: h.ID})
	require.NoError(t, err)
	require.Equal(t, store.DeliveryDelivered, ds[0].Status)
	require.Equal(t, 2, ds[0].Attempts)
	require.Equal(t, 204, *ds[0].ResponseCode)
	require.Equal(t, int32(2), hits.Load())
}

func TestSign(t *testing.T) {
	mac := hmac.New(sha256.New, []byte("k"))
	mac.Write([]byte(`1700000000.{"a":1}`))
	require.Equal(t, "sha256="+hex.EncodeToString(mac.Sum(nil)), alerting.Sign("k", "1700000000", []byte(`{"a":1}`)))
}

func TestConfigValidate(t *testing.T) {
	_, err := alerting.New(nil, quiet(), nil, alerting.Config{RetryWaitMin: time.Second, RetryWaitMax: time.Millisecond})
	require.Error(t, err)
	reg := prometheus.NewRegistry()
	_, err = alerting.New(nil, quiet(), reg, alerting.Config{})
	require.NoError(t, err)
	_, err = alerting.New(nil, quiet(), reg, alerting.Config{})
	require.Error(t, err, "metrics registered twice")
}
