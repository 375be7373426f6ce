// Package alerting evaluates the stored alert rules and delivers alert events
// to webhooks. The scheduler's leader calls Evaluate and Deliver from its
// maintenance loop (every few seconds); both are safe to call from a second
// replica during a leader change: one open alert per (rule, subject) is
// enforced by the database, and deliveries are claimed with a lease.
//
// Rule kinds (params are validated by alert.ParseParams):
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
	"errors"
	"net/http"
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
