package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func newRule(t *testing.T, s *store.Store, name, kind, params string) store.AlertRule {
	t.Helper()
	r, err := s.CreateAlertRule(context.Background(), store.NewAlertRule{
		Name: name, Kind: kind, Params: store.JSON(params), Enabled: true, CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "alert_rule.create", RequestID: "req-1"},
	})
	require.NoError(t, err)
	return r
}

func testAlertRulesCRUD(t *testing.T, s *store.Store) {
	ctx := context.Background()
	r1 := newRule(t, s, "offline", store.AlertAgentOffline, `{"seconds":60}`)
	require.JSONEq(t, `{"seconds":60}`, string(r1.Params))
	_, err := s.CreateAlertRule(ctx, store.NewAlertRule{Name: "offline", Kind: store.AlertAgentOffline, Params: store.JSON(`{"seconds":1}`)})
	require.ErrorIs(t, err, store.ErrDuplicate)

	r2 := newRule(t, s, "cpu", store.AlertMetricThreshold, `{"metric":"cpu_percent","threshold":90,"for_seconds":60}`)
	r3 := newRule(t, s, "failures", store.AlertCommandFailureRate, `{"window_seconds":60,"rate":0.5}`)

	page, next, err := s.ListAlertRules(ctx, store.Page{Limit: 2})
	require.NoError(t, err)
	require.Len(t, page, 2)
	require.NotEmpty(t, next)
	rest, next2, err := s.ListAlertRules(ctx, store.Page{Limit: 2, Cursor: next})
	require.NoError(t, err)
	require.Empty(t, next2)
	var ids []string
	for _, r := range append(page, rest...) {
		ids = append(ids, r.ID)
	}
	require.Equal(t, []string{r1.ID, r2.ID, r3.ID}, ids, "oldest first, no row twice")
	_, _, err = s.ListAlertRules(ctx, store.Page{Cursor: "!!"})
	require.ErrorIs(t, err, store.ErrBadCursor)

	enabled, err := s.EnabledAlertRules(ctx)
	require.NoError(t, err)
	require.Len(t, enabled, 3)

	require.NoError(t, s.DeleteAlertRule(ctx, r2.ID, store.AuditEvent{Actor: "admin", Action: "alert_rule.delete"}))
	require.ErrorIs(t, s.DeleteAlertRule(ctx, r2.ID, store.AuditEvent{Actor: "admin", Action: "alert_rule.delete"}), store.ErrNotFound)
	n, err := s.CountAudit(ctx, "alert_rule.create")
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	n, err = s.CountAudit(ctx, "alert_rule.delete")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

func newHook(t *testing.T, s *store.Store, url string, enabled bool) store.Webhook {
	t.Helper()
	w, err := s.CreateWebhook(context.Background(), store.NewWebhook{URL: url, Secret: "s3cret", Enabled: enabled, CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "webhook.create"}})
	require.NoError(t, err)
	return w
}

func testPayload(event string, rule store.AlertRule, a store.Alert) (store.JSON, error) {
	return json.Marshal(map[string]any{"event": event, "rule": rule.Name, "subject": a.Subject})
}

func testSyncAlerts(t *testing.T, s *store.Store) {
	ctx := context.Background()
	rule := newRule(t, s, "offline", store.AlertAgentOffline, `{"seconds":60}`)
	hook := newHook(t, s, "http://127.0.0.1:1/hook", true)
	newHook(t, s, "http://127.0.0.1:1/off", false)
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	v := func(subjects ...string) []store.Violation {
		out := make([]store.Violation, len(subjects))
		for i, sub := range subjects {
			out[i] = store.Violation{Subject: sub, Details: store.JSON(`{"n":1}`)}
		}
		return out
	}

	res, err := s.SyncAlerts(ctx, rule, v("a2", "a1"), t0, 0, testPayload)
	require.NoError(t, err)
	require.Len(t, res.Opened, 2)
	require.Equal(t, "a1", res.Opened[0].Subject)
	require.Empty(t, res.Resolved)

	// Still true: no duplicate, nothing queued.
	res, err = s.SyncAlerts(ctx, rule, v("a1", "a2"), t0.Add(time.Minute), 0, testPayload)
	require.NoError(t, err)
	require.Empty(t, res.Opened)
	require.Empty(t, res.Resolved)

	// a2 recovers; a1 is pending only (still open, stays open).
	res, err = s.SyncAlerts(ctx, rule, []store.Violation{{Subject: "a1", Pending: true}}, t0.Add(2*time.Minute), 0, testPayload)
	require.NoError(t, err)
	require.Empty(t, res.Opened)
	require.Len(t, res.Resolved, 1)
	require.Equal(t, "a2", res.Resolved[0].Subject)
	require.NotNil(t, res.Resolved[0].ResolvedAt)

	// A pending violation does not open a new alert.
	res, err = s.SyncAlerts(ctx, rule, []store.Violation{{Subject: "a1"}, {Subject: "a2", Pending: true}}, t0.Add(3*time.Minute), 0, testPayload)
	require.NoError(t, err)
	require.Empty(t, res.Opened)
	require.Empty(t, res.Resolved)

	// a2 fires again: a new alert; maxOpen defers the rest.
	res, err = s.SyncAlerts(ctx, rule, v("a1", "a2", "a3", "a4"), t0.Add(4*time.Minute), 2, testPayload)
	require.NoError(t, err)
	require.Len(t, res.Opened, 2)
	require.Equal(t, []string{"a2", "a3"}, []string{res.Opened[0].Subject, res.Opened[1].Subject})
	require.Equal(t, 1, res.Deferred)

	open, err := s.CountOpenAlerts(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(3), open)

	firing, next, err := s.ListAlerts(ctx, store.AlertFilter{State: store.AlertStateFiring})
	require.NoError(t, err)
	require.Empty(t, next)
	require.Len(t, firing, 3)
	resolved, _, err := s.ListAlerts(ctx, store.AlertFilter{State: store.AlertStateResolved, RuleID: rule.ID})
	require.NoError(t, err)
	require.Len(t, resolved, 1)
	require.Equal(t, "a2", resolved[0].Subject)
	require.Equal(t, "offline", resolved[0].RuleName)
	require.Equal(t, store.AlertAgentOffline, resolved[0].Kind)
	require.JSONEq(t, `{"n":1}`, string(resolved[0].Details))
	require.True(t, resolved[0].FiredAt.Equal(t0), "fired_at is the evaluation time: %v", resolved[0].FiredAt)
	require.True(t, resolved[0].ResolvedAt.Equal(t0.Add(2*time.Minute)))
	_, _, err = s.ListAlerts(ctx, store.AlertFilter{State: "open"})
	require.Error(t, err)

	// Newest first, paged.
	all, next, err := s.ListAlerts(ctx, store.AlertFilter{Page: store.Page{Limit: 3}})
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.NotEmpty(t, next)
	require.True(t, all[0].FiredAt.Equal(t0.Add(4*time.Minute)))
	last, next, err := s.ListAlerts(ctx, store.AlertFilter{Page: store.Page{Limit: 3, Cursor: next}})
	require.NoError(t, err)
	require.Empty(t, next)
	require.Len(t, last, 1)
	require.True(t, last[0].FiredAt.Equal(t0))

	// One delivery per transition, for the enabled webhook only: 2 + 1 + 2.
	ds, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: hook.ID, Page: store.Page{Limit: 100}})
	require.NoError(t, err)
	require.Len(t, ds, 5)
	events := map[string]int{}
	for _, d := range ds {
		require.Equal(t, store.DeliveryPending, d.Status)
		events[d.Event]++
		var doc map[string]string
		require.NoError(t, json.Unmarshal(d.Payload, &doc))
		require.Equal(t, d.Event, doc["event"])
	}
	require.Equal(t, map[string]int{store.EventAlertFired: 4, store.EventAlertResolved: 1}, events)

	// Deleting the rule deletes its alerts; the log stays.
	require.NoError(t, s.DeleteAlertRule(ctx, rule.ID, store.AuditEvent{Actor: "admin", Action: "alert_rule.delete"}))
	open, err = s.CountOpenAlerts(ctx)
	require.NoError(t, err)
	require.Zero(t, open)
	ds, _, err = s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: hook.ID})
	require.NoError(t, err)
	require.Len(t, ds, 5)
}

// Concurrent evaluators (a leader change) open one alert, never two: the
// unique partial index on open alerts decides.
func testSyncAlertsConcurrent(t *testing.T, s *store.Store) {
	ctx := context.Background()
	rule := newRule(t, s, "unhealthy", store.AlertAgentUnhealthy, `{}`)
	newHook(t, s, "http://127.0.0.1:1/hook", true)
	now := time.Now()
	var wg sync.WaitGroup
	opened := make([]int, 6)
	errs := make([]error, 6)
	for i := range opened {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.SyncAlerts(ctx, rule, []store.Violation{{Subject: "x"}, {Subject: "y"}}, now, 0, testPayload)
			opened[i], errs[i] = len(res.Opened), err
		}()
	}
	wg.Wait()
	total := 0
	for i := range opened {
		require.NoError(t, errs[i])
		total += opened[i]
	}
	require.Equal(t, 2, total)
	firing, _, err := s.ListAlerts(ctx, store.AlertFilter{State: store.AlertStateFiring})
	require.NoError(t, err)
	require.Len(t, firing, 2)
}

func testAlertConditionQueries(t *testing.T, s *store.Store) {
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Second)
	at := func(id, site string, labels map[string]string, when time.Time) {
		require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: id, Site: site, Labels: labels, Capabilities: []string{"echo"}, GatewayID: "gw", SessionID: "s-" + id, At: when}))
		trust(t, s, id, site, labels)
	}
	at("p1", "prod", map[string]string{"role": "web"}, t0.Add(-time.Hour))
	at("p2", "prod", map[string]string{"role": "db"}, t0.Add(-time.Hour))
	at("l1", "lab", map[string]string{"role": "web"}, t0.Add(-time.Hour))
	at("up", "prod", map[string]string{"role": "web"}, t0.Add(-time.Hour))
	for _, id := range []string{"p1", "p2", "l1"} {
		ok, err := s.MarkAgentOffline(ctx, id, "s-"+id, t0.Add(-10*time.Minute))
		require.NoError(t, err)
		require.True(t, ok)
	}

	// Offline longer than 5 minutes: all three; longer than 15: none.
	off, err := s.OfflineAgents(ctx, nil, t0.Add(-5*time.Minute))
	require.NoError(t, err)
	require.Equal(t, []string{"l1", "p1", "p2"}, seenIDs(off))
	require.True(t, off[0].LastSeenAt.Equal(t0.Add(-10*time.Minute)))
	off, err = s.OfflineAgents(ctx, nil, t0.Add(-15*time.Minute))
	require.NoError(t, err)
	require.Empty(t, off)
	off, err = s.OfflineAgents(ctx, &store.Selector{Site: "prod", Labels: map[string]string{"role": "web"}}, t0)
	require.NoError(t, err)
	require.Equal(t, []string{"p1"}, seenIDs(off))
	off, err = s.OfflineAgents(ctx, &store.Selector{Labels: map[string]string{"role": "web"}}, t0)
	require.NoError(t, err)
	require.Equal(t, []string{"l1", "p1"}, seenIDs(off))

	// Unhealthy: only online agents count.
	require.NoError(t, s.TouchAgents(ctx, []store.HealthUpdate{{AgentID: "up", Status: "unhealthy", At: t0}, {AgentID: "p1", Status: "unhealthy", At: t0}}))
	bad, err := s.UnhealthyAgents(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"up"}, seenIDs(bad))
	bad, err = s.UnhealthyAgents(ctx, &store.Selector{Site: "lab"})
	require.NoError(t, err)
	require.Empty(t, bad)

	// Metric: every sample in (t0-60s, t0] above 90, at least one.
	sample := func(agent string, ago time.Duration, metrics string) store.TelemetrySample {
		return store.TelemetrySample{AgentID: agent, TS: t0.Add(-ago), Metrics: store.JSON(metrics), ReceivedAt: t0}
	}
	require.NoError(t, s.InsertTelemetry(ctx, []store.TelemetrySample{
		sample("p1", 50*time.Second, `{"cpu_percent":95}`),
		sample("p1", 10*time.Second, `{"cpu_percent":91.5}`),
		sample("p1", 0, `{"mem_percent":10}`), // no cpu: ignored
		sample("p2", 50*time.Second, `{"cpu_percent":99}`),
		sample("p2", 20*time.Second, `{"cpu_percent":90}`), // not above
		sample("l1", 60*time.Second, `{"cpu_percent":10}`), // on the open edge: outside
		sample("l1", 30*time.Second, `{"cpu_percent":97}`),
		sample("l1", 0, `{"cpu_percent":98}`),                  // on the closed edge: inside
		sample("up", 30*time.Second, `{"cpu_percent":"high"}`), // not a number: ignored
		sample("up", 90*time.Second, `{"cpu_percent":99}`),     // before the window
		sample("up", -5*time.Second, `{"cpu_percent":99}`),     // after now
	}))
	hot, err := s.MetricAbove(ctx, "cpu_percent", 90, t0.Add(-60*time.Second), t0, nil)
	require.NoError(t, err)
	require.Len(t, hot, 2)
	require.Equal(t, store.MetricBreach{AgentID: "l1", Samples: 2, Min: 97, Max: 98}, hot[0])
	require.Equal(t, store.MetricBreach{AgentID: "p1", Samples: 2, Min: 91.5, Max: 95}, hot[1])
	hot, err = s.MetricAbove(ctx, "cpu_percent", 90, t0.Add(-60*time.Second), t0, &store.Selector{Site: "prod"})
	require.NoError(t, err)
	require.Len(t, hot, 1)
	require.Equal(t, "p1", hot[0].AgentID)
	hot, err = s.MetricAbove(ctx, "mem_percent", 5, t0.Add(-60*time.Second), t0, nil)
	require.NoError(t, err)
	require.Len(t, hot, 1)
	_, err = s.MetricAbove(ctx, `x"; DROP TABLE telemetry; --`, 1, t0, t0, nil)
	require.Error(t, err)

	// Failure rate over executions finished in the window.
	Online(t, s, "runner", "gw", "s-runner")
	for i, status := range []string{"succeeded", "failed", "failed", "succeeded"} {
		c, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"runner"}}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "x"}})
		require.NoError(t, err)
		due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 10}, routeAll("gw"))
		require.NoError(t, err)
		require.Len(t, due, 1)
		require.Equal(t, c.ID, due[0].CommandID)
		finished := t0.Add(-time.Duration(i*20) * time.Second) // 0, 20, 40, 60 s ago
		_, rec, err := s.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: "runner", Status: status, FinishedAt: finished})
		require.NoError(t, err)
		require.True(t, rec)
	}
	st, err := s.CommandFailureStats(ctx, t0.Add(-60*time.Second), t0)
	require.NoError(t, err)
	require.Equal(t, store.FailureStats{Finished: 3, Failed: 2}, st)
	st, err = s.CommandFailureStats(ctx, t0.Add(-10*time.Second), t0)
	require.NoError(t, err)
	require.Equal(t, store.FailureStats{Finished: 1, Failed: 0}, st)
	st, err = s.CommandFailureStats(ctx, t0.Add(time.Hour), t0.Add(2*time.Hour))
	require.NoError(t, err)
	require.Equal(t, store.FailureStats{}, st)
}

func seenIDs(as []store.AgentSeen) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

func testWebhooksAndDeliveries(t *testing.T, s *store.Store) {
	ctx := context.Background()
	h1 := newHook(t, s, "https://example.test/a", true)
	h2 := newHook(t, s, "https://example.test/b", true)
	list, next, err := s.ListWebhooks(ctx, store.Page{Limit: 1})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, h1.ID, list[0].ID)
	list, next, err = s.ListWebhooks(ctx, store.Page{Limit: 1, Cursor: next})
	require.NoError(t, err)
	require.Empty(t, next)
	require.Equal(t, h2.ID, list[0].ID)
	got, err := s.GetWebhook(ctx, h1.ID)
	require.NoError(t, err)
	require.Equal(t, "s3cret", got.Secret)
	_, err = s.GetWebhook(ctx, "nope")
	require.ErrorIs(t, err, store.ErrNotFound)

	rule := newRule(t, s, "failures", store.AlertCommandFailureRate, `{"window_seconds":60,"rate":0.1}`)
	now := time.Now().UTC()
	_, err = s.SyncAlerts(ctx, rule, []store.Violation{{Subject: store.SubjectGlobal}}, now, 0, testPayload)
	require.NoError(t, err)

	// Claim leases both deliveries; a second claimer gets nothing.
	claimed, err := s.ClaimDeliveries(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 2)
	urls := map[string]string{}
	for _, c := range claimed {
		urls[c.WebhookID] = c.URL
		require.Equal(t, "s3cret", c.Secret)
		require.Equal(t, store.EventAlertFired, c.Event)
		require.NotEmpty(t, c.Payload)
	}
	require.Equal(t, map[string]string{h1.ID: h1.URL, h2.ID: h2.URL}, urls)
	again, err := s.ClaimDeliveries(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	require.Empty(t, again)

	code := 200
	body := strings.Repeat("é", 400) + "\x00" // 800+ bytes, cut inside a rune
	require.NoError(t, s.RecordDelivery(ctx, store.DeliveryOutcome{ID: claimed[0].ID, Status: store.DeliveryDelivered, Attempts: 2, ResponseCode: &code, ResponseBody: body, At: now}))
	// The other was interrupted: pending again, lease freed, attempts kept.
	require.NoError(t, s.RecordDelivery(ctx, store.DeliveryOutcome{ID: claimed[1].ID, Status: store.DeliveryPending, Attempts: 1, LastError: "context canceled", At: now}))
	require.Error(t, s.RecordDelivery(ctx, store.DeliveryOutcome{ID: claimed[1].ID, Status: "weird"}))

	again, err = s.ClaimDeliveries(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, again, 1)
	require.Equal(t, claimed[1].ID, again[0].ID)
	require.Equal(t, 1, again[0].Attempts)
	// An expired lease (the claimer died) is claimed again.
	again, err = s.ClaimDeliveries(ctx, now.Add(2*time.Minute), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, again, 1)
	require.NoError(t, s.RecordDelivery(ctx, store.DeliveryOutcome{ID: again[0].ID, Status: store.DeliveryFailed, Attempts: 4, LastError: "HTTP 500", At: now}))

	d1, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: claimed[0].WebhookID})
	require.NoError(t, err)
	require.Len(t, d1, 1)
	require.Equal(t, store.DeliveryDelivered, d1[0].Status)
	require.Equal(t, 2, d1[0].Attempts)
	require.Equal(t, 200, *d1[0].ResponseCode)
	require.NotNil(t, d1[0].DeliveredAt)
	require.LessOrEqual(t, len(d1[0].ResponseBody), store.MaxResponseBodySize)
	require.Equal(t, strings.Repeat("é", 256), d1[0].ResponseBody)
	d2, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: claimed[1].WebhookID})
	require.NoError(t, err)
	require.Equal(t, store.DeliveryFailed, d2[0].Status)
	require.Equal(t, 5, d2[0].Attempts)
	require.Equal(t, "HTTP 500", d2[0].LastError)
	require.Nil(t, d2[0].ResponseCode)
	require.Nil(t, d2[0].ClaimedUntil)

	// Nothing pending any more.
	again, err = s.ClaimDeliveries(ctx, now.Add(time.Hour), 10, time.Minute)
	require.NoError(t, err)
	require.Empty(t, again)

	// Deleting a webhook deletes its log.
	require.NoError(t, s.DeleteWebhook(ctx, h1.ID, store.AuditEvent{Actor: "admin", Action: "webhook.delete"}))
	require.ErrorIs(t, s.DeleteWebhook(ctx, h1.ID, store.AuditEvent{Actor: "admin", Action: "webhook.delete"}), store.ErrNotFound)
	d, _, err := s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: h1.ID})
	require.NoError(t, err)
	require.Empty(t, d)

	// Pruning history: the resolved alert and the finished delivery go.
	_, err = s.SyncAlerts(ctx, rule, nil, now.Add(time.Minute), 0, testPayload)
	require.NoError(t, err)
	n, err := s.PruneAlertHistory(ctx, now.Add(-time.Hour), 100)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is old enough")
	n, err = s.PruneAlertHistory(ctx, now.Add(24*time.Hour), 100)
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "one resolved alert and one failed delivery; the pending resolve notice stays")
	d, _, err = s.ListDeliveries(ctx, store.DeliveryFilter{WebhookID: h2.ID})
	require.NoError(t, err)
	require.Len(t, d, 1)
	require.Equal(t, store.EventAlertResolved, d[0].Event)
}

func testWebhookLimit(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for i := range store.MaxWebhooks {
		newHook(t, s, fmt.Sprintf("https://example.test/%d", i), true)
	}
	_, err := s.CreateWebhook(ctx, store.NewWebhook{URL: "https://example.test/x", Secret: "s", Enabled: true, CreatedBy: "a", Audit: store.AuditEvent{Actor: "a", Action: "webhook.create"}})
	require.True(t, errors.Is(err, store.ErrLimitReached), "got %v", err)
}
