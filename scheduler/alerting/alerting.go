// Package alerting evaluates the stored alert rules and delivers alert events
// to webhooks. The scheduler's leader calls Evaluate and Deliver from its
// maintenance loop (every few seconds); both are safe to call from a second
// replica during a leader change: one open alert per (rule, subject) is
// enforced by the database, and deliveries are claimed with a lease.
//
// Rule kinds (params are validated by store.ParseAlertParams):
//
//   - agent_offline {seconds, selector?}: an agent whose status is offline and
//     whose last_seen_at (updated_at when never seen) is more than seconds
//     before now. One alert per agent.
//   - agent_unhealthy {seconds?, selector?}: an online agent whose latest
//     heartbeat health is "unhealthy". The database keeps only the latest
//     health, not when it changed, so with seconds > 0 the alerter remembers
//     (in memory) when it first saw each agent unhealthy and fires once it has
//     seen it unhealthy for seconds; after a restart or a leader change that
//     wait starts again (an alert already open stays open). One alert per agent.
//   - metric_threshold {metric, threshold, for_seconds, selector?}: every
//     telemetry sample of the agent carrying the metric in (now-for_seconds,
//     now] is above threshold, and there is at least one. One alert per agent.
//   - command_failure_rate {window_seconds, rate, min_executions?}: of the
//     executions that finished in (now-window_seconds, now], the share that
//     finished failed or timed_out is above rate, with at least
//     min_executions finished. One alert, subject "global".
//
// An alert fires once and resolves once: it stays open while its condition
// holds and is resolved (resolved_at) when it stops holding; the next time the
// condition holds a new alert opens. Each fire and each resolve queues one
// delivery per enabled webhook, in the same transaction.
//
// Deliveries connect only to public unicast addresses or to those the
// Targets policy allows (package egress), checked on the address each
// connection dials, so neither DNS answers nor redirects (never followed: a
// 3xx is a failed delivery) reach this host, the cloud metadata service or a
// private network unless allowed. The delivery log keeps each answer's status
// code and size, and its first 512 bytes only when StoreResponseBody is set.
//
// Deliveries are POSTed as JSON (Event) with go-retryablehttp: connection
// errors and 5xx answers (except 501) are retried with capped exponential
// backoff, other answers are final (2xx delivered, anything else failed).
// Each request carries X-Viworks-Timestamp (unix seconds) and
// X-Viworks-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>.
package alerting

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/egress"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
)

// Store is the durable state the alerter works on (*store.Store satisfies it).
type Store interface {
	EnabledAlertRules(ctx context.Context) ([]store.AlertRule, error)
	OfflineAgents(ctx context.Context, sel *store.Selector, cutoff time.Time) ([]store.AgentSeen, error)
	UnhealthyAgents(ctx context.Context, sel *store.Selector) ([]store.AgentSeen, error)
	MetricAbove(ctx context.Context, metric string, threshold float64, from, to time.Time, sel *store.Selector) ([]store.MetricBreach, error)
	CommandFailureStats(ctx context.Context, from, to time.Time) (store.FailureStats, error)
	SyncAlerts(ctx context.Context, rule store.AlertRule, violations []store.Violation, now time.Time, maxOpen int, payload store.PayloadFunc) (store.SyncResult, error)
	CountOpenAlerts(ctx context.Context) (int64, error)
	ClaimDeliveries(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]store.PendingDelivery, error)
	RecordDelivery(ctx context.Context, o store.DeliveryOutcome) error
	PruneAlertHistory(ctx context.Context, cutoff time.Time, limit int) (int64, error)
}

// Headers of a delivery.
const (
	HeaderSignature = "X-Viworks-Signature"
	HeaderTimestamp = "X-Viworks-Timestamp"
	HeaderEvent     = "X-Viworks-Event"
	HeaderDelivery  = "X-Viworks-Delivery" // the delivery id: the same on a re-send, for receivers to drop duplicates
)

// MaxDeliveriesPerCall bounds the deliveries one Deliver call sends.
const MaxDeliveriesPerCall = 1000

// Config configures the alerter. Zero values take the defaults.
type Config struct {
	HTTPTimeout  time.Duration // per HTTP attempt; default 10s
	RetryMax     int           // retries after the first attempt; default 3, negative: none
	RetryWaitMin time.Duration // first backoff; default 1s
	RetryWaitMax time.Duration // backoff cap; default 30s

	// Targets decides which addresses deliveries may connect to, checked on
	// every address dialed (alerts.webhook_allowed_cidrs); nil: public
	// unicast addresses only.
	Targets *egress.Policy
	// StoreResponseBody keeps the first 512 bytes of each answer in the
	// delivery log (alerts.webhook_store_response_body); default: only the
	// status code and the body's size.
	StoreResponseBody bool

	Concurrency      int           // deliveries sent at once; default 8
	MaxDeliveries    int           // deliveries per Deliver call; default and at most 1000
	MaxOpenPerRule   int           // alerts one rule may open per Evaluate (the rest next time); default 1000
	HistoryRetention time.Duration // resolved alerts and finished deliveries older than this are pruned; default 30 days

	Events *events.Publisher // optional: alerts fired and resolved are published here
}

func (c *Config) setDefaults() {
	if c.HTTPTimeout <= 0 {
		c.HTTPTimeout = 10 * time.Second
	}
	switch {
	case c.RetryMax == 0:
		c.RetryMax = 3
	case c.RetryMax < 0:
		c.RetryMax = 0
	}
	if c.RetryWaitMin <= 0 {
		c.RetryWaitMin = time.Second
	}
	if c.RetryWaitMax <= 0 {
		c.RetryWaitMax = 30 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.MaxDeliveries <= 0 || c.MaxDeliveries > MaxDeliveriesPerCall {
		c.MaxDeliveries = MaxDeliveriesPerCall
	}
	if c.MaxOpenPerRule <= 0 {
		c.MaxOpenPerRule = 1000
	}
	if c.HistoryRetention <= 0 {
		c.HistoryRetention = 30 * 24 * time.Hour
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.RetryWaitMax < c.RetryWaitMin {
		errs = append(errs, errors.New("alerting: retry wait max is below retry wait min"))
	}
	if c.RetryMax > 20 {
		errs = append(errs, errors.New("alerting: at most 20 retries"))
	}
	if c.Concurrency > 256 {
		errs = append(errs, errors.New("alerting: concurrency above 256"))
	}
	return errors.Join(errs...)
}

// Alerter evaluates rules and delivers events.
type Alerter struct {
	cfg    Config
	st     Store
	log    logrus.FieldLogger
	client *retryablehttp.Client
	m      *metrics

	mu        sync.Mutex
	unhealthy map[string]map[string]time.Time // rule id → agent id → first seen unhealthy

	delivering atomic.Bool
}

// deliverTimeout bounds one background delivery run.
const deliverTimeout = 2 * time.Minute

// Tick is the scheduler's leader-only maintenance task: it evaluates the rules
// at now, then starts a delivery run in the background unless one is still
// going, so a slow receiver never holds up the scheduler's sweeps.
func (a *Alerter) Tick(ctx context.Context, now time.Time) error {
	if err := a.Evaluate(ctx, now); err != nil {
		return err
	}
	if !a.delivering.CompareAndSwap(false, true) {
		return nil
	}
	go func() {
		defer a.delivering.Store(false)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deliverTimeout)
		defer cancel()
		if err := a.Deliver(dctx); err != nil {
			a.log.WithError(err).Warn("webhook delivery run failed")
		}
	}()
	return nil
}

type metrics struct {
	firing      prometheus.Gauge
	transitions *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	ruleErrors  *prometheus.CounterVec
	deferred    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		firing:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "viworks_alerts_firing", Help: "Alerts open (firing) after the latest evaluation."}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_alert_transitions_total", Help: "Alerts fired and resolved, by rule kind and event."}, []string{"kind", "event"}),
		deliveries:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_webhook_deliveries_total", Help: "Webhook deliveries finished, by outcome (delivered, failed, interrupted)."}, []string{"outcome"}),
		ruleErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_alert_rule_errors_total", Help: "Rule evaluations that failed, by rule kind."}, []string{"kind"}),
		deferred:    prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_alert_opens_deferred_total", Help: "Alerts not opened in an evaluation because a rule hit its per-evaluation bound."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.firing, m.transitions, m.deliveries, m.ruleErrors, m.deferred} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering alerting metrics: %w", err)
			}
		}
	}
	return m, nil
}

// New builds an alerter.
func New(st Store, log logrus.FieldLogger, reg prometheus.Registerer, cfg Config) (*Alerter, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{
		Timeout: cfg.HTTPTimeout,
		// Every connection, whatever the name resolved to, is checked against
		// the targets policy at dial time; no proxy is used.
		Transport: cfg.Targets.Transport(cfg.HTTPTimeout),
		// A redirect is an answer like any other non-2xx: failed, not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c := &retryablehttp.Client{
		HTTPClient:   hc,
		Logger:       nil, // outcomes are logged here, without URLs
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		RetryMax:     cfg.RetryMax,
		CheckRetry:   checkRetry,
		Backoff:      backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler, // keep the last answer to record it
		RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, attempt int) {
			if n, ok := req.Context().Value(attemptsKey{}).(*atomic.Int32); ok {
				n.Store(int32(attempt + 1))
			}
		},
	}
	return &Alerter{cfg: cfg, st: st, log: log, client: c, m: m, unhealthy: map[string]map[string]time.Time{}}, nil
}

type attemptsKey struct{}

// checkRetry retries connection errors (but not refused targets, nor TLS,
// scheme or redirect errors, as go-retryablehttp's default policy) and 5xx
// answers but 501.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if errors.Is(err, egress.ErrRefused) {
		return false, nil // a refused target stays refused
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	return resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented, nil
}

// backoff is exponential (RetryWaitMin × 2^n, capped at RetryWaitMax); a
// receiver's Retry-After is not honoured, so it cannot stall the loop.
func backoff(lo, hi time.Duration, n int, _ *http.Response) time.Duration {
	return retryablehttp.DefaultBackoff(lo, hi, n, nil)
}

// Sign returns the X-Viworks-Signature value of body sent at timestamp (unix
// seconds, as in X-Viworks-Timestamp).
func Sign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// AlertDoc is an alert in an event.
type AlertDoc struct {
	ID         string          `json:"id"`
	RuleID     string          `json:"rule_id"`
	RuleName   string          `json:"rule_name"`
	Kind       string          `json:"kind"`
	Subject    string          `json:"subject"`
	State      string          `json:"state"` // firing or resolved
	Details    json.RawMessage `json:"details"`
	FiredAt    time.Time       `json:"fired_at"`
	ResolvedAt *time.Time      `json:"resolved_at"`
}

// RuleDoc is the rule of an alert in an event.
type RuleDoc struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Kind   string          `json:"kind"`
	Params json.RawMessage `json:"params"`
}

// Event is the JSON body POSTed to webhooks.
type Event struct {
	Event  string     `json:"event"` // alert.fired or alert.resolved
	Alert  AlertDoc   `json:"alert"`
	Rule   RuleDoc    `json:"rule"`
	SentAt *time.Time `json:"sent_at,omitempty"` // set when sent
}

// render builds the stored document of an event (sent_at is added when sent).
func render(event string, rule store.AlertRule, a store.Alert) (store.JSON, error) {
	state := store.AlertStateFiring
	if a.ResolvedAt != nil {
		state = store.AlertStateResolved
	}
	details := json.RawMessage(a.Details)
	if len(details) == 0 {
		details = json.RawMessage(`{}`)
	}
	params := json.RawMessage(rule.Params)
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	return json.Marshal(Event{
		Event: event,
		Alert: AlertDoc{ID: a.ID, RuleID: a.RuleID, RuleName: a.RuleName, Kind: a.Kind, Subject: a.Subject, State: state,
			Details: details, FiredAt: a.FiredAt.UTC(), ResolvedAt: a.ResolvedAt},
		Rule: RuleDoc{ID: rule.ID, Name: rule.Name, Kind: rule.Kind, Params: params},
	})
}

// Evaluate evaluates every enabled rule at now: opens alerts whose condition
// holds, resolves those whose condition stopped holding, and queues the
// deliveries of both. A rule that fails to evaluate is logged and skipped
// (its alerts are left as they are); the errors are returned joined.
func (a *Alerter) Evaluate(ctx context.Context, now time.Time) error {
	now = now.UTC()
	rules, err := a.st.EnabledAlertRules(ctx)
	if err != nil {
		return fmt.Errorf("evaluating alerts: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	live := make(map[string]bool, len(rules))
	for _, r := range rules {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		live[r.ID] = true
		log := a.log.WithFields(logrus.Fields{"rule_id": r.ID, "rule_name": r.Name, "kind": r.Kind})
		vs, err := a.violations(ctx, r, now)
		if err == nil {
			var res store.SyncResult
			res, err = a.st.SyncAlerts(ctx, r, vs, now, a.cfg.MaxOpenPerRule, render)
			if err == nil {
				a.report(ctx, log, r, res)
			}
		}
		if err != nil {
			a.m.ruleErrors.WithLabelValues(r.Kind).Inc()
			log.WithError(err).Error("alert rule evaluation failed")
			errs = append(errs, fmt.Errorf("rule %s: %w", r.ID, err))
		}
	}
	if ctx.Err() != nil {
		return errors.Join(errs...)
	}
	for id := range a.unhealthy {
		if !live[id] {
			delete(a.unhealthy, id)
		}
	}
	if n, err := a.st.CountOpenAlerts(ctx); err != nil {
		errs = append(errs, err)
	} else {
		a.m.firing.Set(float64(n))
	}
	if n, err := a.st.PruneAlertHistory(ctx, now.Add(-a.cfg.HistoryRetention), 10000); err != nil {
		a.log.WithError(err).Warn("pruning alert history failed")
	} else if n > 0 {
		a.log.WithField("rows", n).Info("alert history pruned")
	}
	return errors.Join(errs...)
}

func (a *Alerter) report(ctx context.Context, log logrus.FieldLogger, r store.AlertRule, res store.SyncResult) {
	var evs []events.Event
	for _, al := range res.Opened {
		a.m.transitions.WithLabelValues(r.Kind, "fired").Inc()
		log.WithFields(logrus.Fields{"alert_id": al.ID, "subject": al.Subject}).Warn("alert fired")
		evs = append(evs, alertEvent(events.AlertFired, al))
	}
	for _, al := range res.Resolved {
		a.m.transitions.WithLabelValues(r.Kind, "resolved").Inc()
		log.WithFields(logrus.Fields{"alert_id": al.ID, "subject": al.Subject}).Info("alert resolved")
		evs = append(evs, alertEvent(events.AlertResolved, al))
	}
	a.cfg.Events.Publish(ctx, evs...)
	if res.Deferred > 0 {
		a.m.deferred.Add(float64(res.Deferred))
		log.WithFields(logrus.Fields{"deferred": res.Deferred, "max_open": a.cfg.MaxOpenPerRule}).Warn("alert openings deferred to the next evaluation")
	}
}

func alertEvent(typ string, al store.Alert) events.Event {
	e := events.Event{Type: typ, AlertID: al.ID, RuleID: al.RuleID, Reason: al.Kind}
	if al.Subject != store.SubjectGlobal {
		e.AgentID = al.Subject
	}
	return e
}

func details(v any) store.JSON {
	b, err := json.Marshal(v)
	if err != nil {
		return store.JSON(`{}`)
	}
	return b
}

// violations evaluates one rule at now.
func (a *Alerter) violations(ctx context.Context, r store.AlertRule, now time.Time) ([]store.Violation, error) {
	typed, _, err := store.ParseAlertParams(r.Kind, r.Params)
	if err != nil {
		return nil, fmt.Errorf("stored params: %w", err)
	}
	var out []store.Violation
	switch p := typed.(type) {
	case store.AgentOfflineParams:
		agents, err := a.st.OfflineAgents(ctx, p.Selector, now.Add(-time.Duration(p.Seconds)*time.Second))
		if err != nil {
			return nil, err
		}
		for _, ag := range agents {
			out = append(out, store.Violation{Subject: ag.ID, Details: details(map[string]any{
				"last_seen_at": ag.LastSeenAt, "offline_seconds": int64(now.Sub(ag.LastSeenAt) / time.Second), "seconds": p.Seconds,
			})})
		}
	case store.AgentUnhealthyParams:
		agents, err := a.st.UnhealthyAgents(ctx, p.Selector)
		if err != nil {
			return nil, err
		}
		seen := a.unhealthy[r.ID]
		if seen == nil {
			seen = map[string]time.Time{}
			a.unhealthy[r.ID] = seen
		}
		current := make(map[string]bool, len(agents))
		for _, ag := range agents {
			current[ag.ID] = true
			since, ok := seen[ag.ID]
			if !ok || since.After(now) {
				since = now
				seen[ag.ID] = now
			}
			out = append(out, store.Violation{
				Subject: ag.ID,
				Pending: now.Sub(since) < time.Duration(p.Seconds)*time.Second,
				Details: details(map[string]any{"health_status": "unhealthy", "unhealthy_since": since, "last_seen_at": ag.LastSeenAt, "seconds": p.Seconds}),
			})
		}
		for id := range seen {
			if !current[id] {
				delete(seen, id)
			}
		}
	case store.MetricThresholdParams:
		breaches, err := a.st.MetricAbove(ctx, p.Metric, p.Threshold, now.Add(-time.Duration(p.ForSeconds)*time.Second), now, p.Selector)
		if err != nil {
			return nil, err
		}
		for _, b := range breaches {
			out = append(out, store.Violation{Subject: b.AgentID, Details: details(map[string]any{
				"metric": p.Metric, "threshold": p.Threshold, "for_seconds": p.ForSeconds, "samples": b.Samples, "min": b.Min, "max": b.Max,
			})})
		}
	case store.CommandFailureRateParams:
		st, err := a.st.CommandFailureStats(ctx, now.Add(-time.Duration(p.WindowSeconds)*time.Second), now)
		if err != nil {
			return nil, err
		}
		if st.Finished > 0 && st.Finished >= int64(p.MinExecutions) {
			rate := float64(st.Failed) / float64(st.Finished)
			if rate > p.Rate {
				out = append(out, store.Violation{Subject: store.SubjectGlobal, Details: details(map[string]any{
					"finished": st.Finished, "failed": st.Failed, "failure_rate": rate, "rate": p.Rate, "window_seconds": p.WindowSeconds,
				})})
			}
		}
	default:
		return nil, fmt.Errorf("unknown rule kind %q", r.Kind)
	}
	return out, nil
}

// lease is how long a claimed batch is kept from other claimers: the worst
// case of sending it, with a margin.
func (a *Alerter) lease() time.Duration {
	tries := time.Duration(a.cfg.RetryMax + 1)
	return tries*a.cfg.HTTPTimeout + time.Duration(a.cfg.RetryMax)*a.cfg.RetryWaitMax + time.Minute
}

// Deliver sends pending deliveries, at most MaxDeliveries (1000) per call,
// Concurrency at a time, and records each outcome. Deliveries interrupted by
// ctx stay pending and are sent again by a later call.
func (a *Alerter) Deliver(ctx context.Context) error {
	sent := 0
	var errs []error
	for sent < a.cfg.MaxDeliveries && ctx.Err() == nil {
		batch := min(a.cfg.Concurrency, a.cfg.MaxDeliveries-sent)
		claimed, err := a.st.ClaimDeliveries(ctx, time.Now(), batch, a.lease())
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("delivering alerts: %w", err))...)
		}
		sent += len(claimed)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, d := range claimed {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := a.send(ctx, d)
				a.m.deliveries.WithLabelValues(outcomeLabel(o.Status)).Inc()
				log := a.log.WithFields(logrus.Fields{"delivery_id": d.ID, "webhook_id": d.WebhookID, "alert_id": d.AlertID, "event": d.Event, "attempts": o.Attempts})
				if o.ResponseCode != nil {
					log = log.WithField("status_code", *o.ResponseCode)
				}
				switch o.Status {
				case store.DeliveryDelivered:
					log.Debug("webhook delivered")
				case store.DeliveryFailed:
					log.WithField("error", o.LastError).Warn("webhook delivery failed")
				default:
					log.Info("webhook delivery interrupted; it will be sent again")
				}
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				if err := a.st.RecordDelivery(rctx, o); err != nil {
					log.WithError(err).Error("recording webhook delivery failed")
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(claimed) < batch {
			break
		}
	}
	return errors.Join(errs...)
}

func outcomeLabel(status string) string {
	if status == store.DeliveryPending {
		return "interrupted"
	}
	return status
}

// send POSTs one delivery with retries and returns its outcome.
func (a *Alerter) send(ctx context.Context, d store.PendingDelivery) store.DeliveryOutcome {
	out := store.DeliveryOutcome{ID: d.ID, Status: store.DeliveryFailed}
	var ev Event
	if err := json.Unmarshal(d.Payload, &ev); err != nil {
		out.LastError, out.At = "stored payload is not an alert event", time.Now()
		return out
	}
	sent := time.Now().UTC()
	ev.SentAt = &sent
	body, err := json.Marshal(ev)
	if err != nil {
		out.LastError, out.At = "encoding the event failed", time.Now()
		return out
	}
	var attempts atomic.Int32
	rctx := context.WithValue(ctx, attemptsKey{}, &attempts)
	req, err := retryablehttp.NewRequestWithContext(rctx, http.MethodPost, d.URL, body)
	if err != nil {
		out.LastError, out.At = scrub("building the request: "+describe(err), d), time.Now()
		return out
	}
	ts := strconv.FormatInt(sent.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "viworks-alerting/1")
	req.Header.Set(HeaderEvent, ev.Event)
	req.Header.Set(HeaderDelivery, d.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(d.Secret, ts, body))

	resp, err := a.client.Do(req)
	out.Attempts, out.At = int(attempts.Load()), time.Now()
	if resp != nil {
		defer resp.Body.Close()
		code := resp.StatusCode
		out.ResponseCode = &code
		b, _ := io.ReadAll(io.LimitReader(resp.Body, store.MaxResponseBodySize))
		if a.cfg.StoreResponseBody {
			out.ResponseBody = string(b)
		}
		rest, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, store.MaxResponseRead-int64(len(b)))) // also lets the connection be reused
		n := int64(len(b)) + rest
		out.ResponseBytes = &n
	}
	switch {
	case err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300:
		out.Status = store.DeliveryDelivered
	case ctx.Err() != nil:
		out.Status, out.LastError = store.DeliveryPending, "interrupted: "+ctx.Err().Error()
	case err != nil:
		out.LastError = scrub(describe(err), d)
	default:
		out.LastError = fmt.Sprintf("receiver answered HTTP %d", resp.StatusCode)
	}
	return out
}

// describe drops the URL from an HTTP client error (it may carry credentials
// or tokens in its path or query).
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// scrub removes the webhook's URL and secret from a message, should any part
// of the stack have quoted them.
func scrub(msg string, d store.PendingDelivery) string {
	if d.Secret != "" {
		msg = strings.ReplaceAll(msg, d.Secret, "[secret]")
	}
	if d.URL != "" {
		msg = strings.ReplaceAll(msg, d.URL, "[url]")
	}
	if len(msg) > 512 {
		msg = msg[:512]
	}
	return msg
}
