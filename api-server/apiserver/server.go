// Package apiserver is the api-server role: the stateless REST API
// (gin), behind JWT with roles, answering errors as RFC 9457 problem+json.
package apiserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/api-server/apiserver/readcache"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/egress"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/refusal"
	"github.com/viworks/backend-agent/pkg/store"
)

// Store is the durable state the API reads and writes.
type Store interface {
	CreateCommand(ctx context.Context, nc store.NewCommand) (store.Command, []store.Execution, error)
	GetCommand(ctx context.Context, id string) (store.Command, []store.Execution, error)
	CancelCommand(ctx context.Context, id, actor, requestID string) ([]store.Timeout, error)
	ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error)
	Ping(ctx context.Context) error

	GetAgent(ctx context.Context, id string) (store.Agent, error)
	PatchAgentAttributes(ctx context.Context, id string, p store.AttributesPatch) (store.Agent, error)
	TelemetrySeries(ctx context.Context, q store.TelemetryQuery) ([]store.TelemetryPoint, error)
	ListCommands(ctx context.Context, f store.CommandFilter) ([]store.Command, string, error)
	ExecutionCounts(ctx context.Context, commandIDs []string) (map[string]map[string]int, error)
	ServiceInstancesSeen(ctx context.Context, since time.Time) ([]store.ServiceInstance, error)
	OnlineAgentsByGateway(ctx context.Context) (map[string]int64, error)
	QueueDepth(ctx context.Context) (map[store.Priority]int64, error)
	Activity(ctx context.Context, now time.Time) (store.Activity, error)

	CreateAlertRule(ctx context.Context, nr store.NewAlertRule) (store.AlertRule, error)
	ListAlertRules(ctx context.Context, p store.Page) ([]store.AlertRule, string, error)
	DeleteAlertRule(ctx context.Context, id string, audit store.AuditEvent) error
	ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, string, error)
	CreateWebhook(ctx context.Context, nw store.NewWebhook) (store.Webhook, error)
	ListWebhooks(ctx context.Context, p store.Page) ([]store.Webhook, string, error)
	GetWebhook(ctx context.Context, id string) (store.Webhook, error)
	DeleteWebhook(ctx context.Context, id string, audit store.AuditEvent) error
	ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.WebhookDelivery, string, error)

	SecurityStore
	IdentityStore
	ScheduleStore
	PreviewStore
}

// Verifier authenticates bearer tokens.
type Verifier interface {
	Verify(token string) (auth.Principal, error)
}

// Config configures the API.
type Config struct {
	DefaultTimeout    time.Duration // command timeout when the request names none
	DefaultMaxRetries int
	DefaultTTL        time.Duration
	MaxTargets        int
	MaxBodyBytes      int64
	MaxQueued         int              // bound on queued executions (max_command_queue_size); 0: unbounded
	EventKeepAlive    time.Duration    // comment sent on idle event streams (default 15s)
	Events            events.HubConfig // bounds of the event stream (MaxPerOwner: per principal)
	// EventRevocationCheck is how often an open event stream checks that its
	// token's API key is not revoked (default 5s).
	EventRevocationCheck time.Duration
	// RevocationCacheTTL is how long a replica trusts its last answer on
	// whether an API key is revoked (default 2s): the bound on how long another
	// replica still accepts a revoked key's tokens.
	RevocationCacheTTL time.Duration

	HeartbeatInterval  time.Duration // agents' heartbeat interval (default 30s)
	StaleAfter         time.Duration // an online agent unseen this long is "stale" (default config.StaleHeartbeats heartbeats + the default flush interval)
	InstanceSeenWithin time.Duration // GET /status lists service instances seen this recently (default 30s)
	HealthTimeout      time.Duration // bound on GET /health/database and /health/redis (default 1s)

	RateLimit      ratelimit.Limit   // per client IP and per principal (security.rate_limit_*); zero: none
	Limiter        ratelimit.Limiter // where the limits are counted; nil: in this process's memory
	TrustedProxies []string          // CIDRs whose X-Forwarded-For is believed (security.trusted_proxies)
	TokenTTL       time.Duration     // lifetime of tokens from POST /auth/token; default 15m
	IdempotencyTTL time.Duration     // how long Idempotency-Keys are kept; default 24h

	// Args seals the secret values of command args before they are stored
	// (security.args_encryption_key); nil stores them as given (dev mode).
	Args *argseal.Keyring
	// Webhooks decides which webhook URLs may be created
	// (alerts.webhook_allowed_cidrs); nil: public addresses only.
	Webhooks *egress.Policy
	// Resolver resolves webhook host names when they are created; nil: the
	// system resolver.
	Resolver egress.Resolver
	// AuthFailureWindow is how often the anonymous authentication failures
	// counted per client address are written to the audit trail, one event per
	// address; default refusal.DefaultWindow (a minute).
	AuthFailureWindow time.Duration
	// AuditHeads is where the scheduler keeps the audit chain's head; GET
	// /audit/verify compares the table against it. Nil: no comparison.
	AuditHeads AuditHeads
	// MaxInFlight bounds the requests in flight on this replica
	// (server.max_connections): beyond it a request answers 503 with
	// Retry-After at once. Health checks and event streams are not counted.
	// Default config.DefaultMaxConnections.
	MaxInFlight int
	// MaxRunning bounds the requests in flight that run at once; the others
	// of MaxInFlight wait for a turn up to QueueWait, then answer 503 with
	// Retry-After. It keeps the latency of the requests admitted under
	// overload near their service time instead of the queue's length.
	// Default 8 × GOMAXPROCS, at least 16.
	MaxRunning int
	// QueueWait is how long a request waits for a turn (MaxRunning) before it
	// is shed; default 20ms.
	QueueWait time.Duration
	// ReadCacheTTL bounds the staleness of GET /agents: each distinct query is
	// read from the database at most once per ReadCacheTTL on a replica, and
	// again as soon as an agent event arrives on the bus (readcache). Default
	// readcache.DefaultTTL (1s); negative: no cache.
	ReadCacheTTL time.Duration
	// RequestTimeout is every request's deadline (server.request_timeout) but
	// health checks' and event streams': its context ends then; past it the
	// request answers 503 with Retry-After. Default
	// config.DefaultRequestTimeoutSeconds.
	RequestTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = config.DefaultCommandTimeoutSeconds * time.Second
	}
	if c.DefaultMaxRetries < 0 {
		c.DefaultMaxRetries = 0
	}
	if c.DefaultTTL <= 0 {
		c.DefaultTTL = time.Hour
	}
	if c.MaxTargets <= 0 {
		c.MaxTargets = 10000
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.EventKeepAlive <= 0 {
		c.EventKeepAlive = 15 * time.Second
	}
	if c.Events.MaxPerOwner <= 0 {
		c.Events.MaxPerOwner = config.DefaultMaxEventStreamsPerPrincipal
	}
	if c.EventRevocationCheck <= 0 {
		c.EventRevocationCheck = 5 * time.Second
	}
	if c.RevocationCacheTTL <= 0 {
		c.RevocationCacheTTL = 2 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = config.DefaultHeartbeatIntervalSeconds * time.Second
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = config.SilentFor(config.StaleHeartbeats, c.HeartbeatInterval, config.DefaultFlushIntervalSeconds*time.Second)
	}
	if c.InstanceSeenWithin <= 0 {
		c.InstanceSeenWithin = 30 * time.Second
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = time.Second
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 15 * time.Minute
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	if c.MaxRunning <= 0 {
		c.MaxRunning = max(16, 8*runtime.GOMAXPROCS(0))
	}
	if c.QueueWait <= 0 {
		c.QueueWait = defaultQueueWait
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = config.DefaultMaxConnections
	}
	if c.ReadCacheTTL == 0 {
		c.ReadCacheTTL = readcache.DefaultTTL
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = config.DefaultRequestTimeoutSeconds * time.Second
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.DefaultTimeout > maxTimeout {
		errs = append(errs, errors.New("apiserver: default command timeout exceeds 24h"))
	}
	if c.StaleAfter > 0 && c.StaleAfter < c.HeartbeatInterval {
		errs = append(errs, errors.New("apiserver: the stale threshold is below the heartbeat interval"))
	}
	if c.HealthTimeout > 10*time.Second {
		errs = append(errs, errors.New("apiserver: the health check timeout exceeds 10s"))
	}
	if (c.RateLimit.Requests == 0) != (c.RateLimit.Window == 0) {
		errs = append(errs, errNoLimit)
	} else if c.RateLimit.Requests != 0 {
		if err := c.RateLimit.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := validateProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Server is the REST API.
type Server struct {
	cfg         Config
	store       Store
	bus         bus.Bus
	verifier    Verifier
	log         logrus.FieldLogger
	engine      *gin.Engine
	hub         *events.Hub
	openapiDoc  []byte
	ops         map[string]operation // the document's operations by "METHOD /gin/path"
	events      *events.Publisher
	send        *bus.Sender // the scheduler wake-ups, CANCELs and revocations the API publishes
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	limiter     ratelimit.Limiter // nil: no rate limits
	limiterErr  atomic.Int64      // unix nanos of the last "rate limiter failed" warning
	limitErrs   *prometheus.CounterVec
	revocations *revocations

	reads     *readcache.Cache   // GET /agents answers; nil: none (ReadCacheTTL < 0)
	probe     *dbProbe           // tells internalError an outage from a failed statement
	inFlight  chan struct{}      // a slot per request in flight (MaxInFlight)
	running   chan struct{}      // a slot per request running (MaxRunning)
	shedCount prometheus.Counter // requests shed for want of a slot

	authFailures *prometheus.CounterVec // anonymous requests refused, by reason
	refusals     *refusal.Aggregator    // their audit events, one per address and minute
}

// New builds the API.
func New(st Store, b bus.Bus, v Verifier, reg prometheus.Registerer, log logrus.FieldLogger, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, store: st, bus: b, verifier: v, log: log,
		hub: events.NewHub(b, log, cfg.Events), events: events.NewPublisher(b, log),
		send:        bus.NewSender(b, log),
		revocations: newRevocations(cfg.RevocationCacheTTL),
		limitErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_api_ratelimit_errors_total",
			Help: "Rate-limiter failures (Redis unreachable) by limit: ip requests are refused (503), principal requests let through."}, []string{"limit"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_api_requests_total", Help: "API requests by route and status code."}, []string{"route", "code"}),
		latency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "viworks_api_request_duration_seconds", Help: "API request latency by route.", Buckets: prometheus.DefBuckets}, []string{"route"}),
	}
	s.probe = newDBProbe(st.Ping, unavailableProbe)
	if cfg.ReadCacheTTL > 0 {
		s.reads = readcache.New(readcache.Config{TTL: cfg.ReadCacheTTL})
	}
	s.inFlight = make(chan struct{}, cfg.MaxInFlight)
	s.running = make(chan struct{}, cfg.MaxRunning)
	s.shedCount = prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_api_shed_requests_total",
		Help: "API requests answered 503 at once because server.max_connections requests were in flight."})
	s.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_api_auth_failures_total", Help: "Anonymous API requests refused for their credentials, by reason."}, []string{"reason"})
	refusals, err := refusal.New(st, log, refusal.Config{Action: "auth.failure", Window: cfg.AuthFailureWindow})
	if err != nil {
		return nil, err
	}
	s.refusals = refusals
	doc, err := openapiJSON()
	if err != nil {
		return nil, err
	}
	s.openapiDoc = doc
	if s.ops, err = operations(); err != nil {
		return nil, err
	}
	if reg != nil {
		reg.MustRegister(s.requests, s.latency, s.limitErrs, s.authFailures, s.shedCount)
	}
	if cfg.RateLimit.Requests > 0 {
		s.limiter = cfg.Limiter
		if s.limiter == nil {
			s.limiter = ratelimit.NewMemory(ratelimit.MemoryConfig{})
		}
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.UseRawPath = true // agent ids may hold "/": clients send it as %2F in /agents/{id}
	if err := e.SetTrustedProxies(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("apiserver: trusted proxies: %w", err)
	}
	e.Use(s.recoverer, s.observe, s.shed, s.deadline, s.clientContext, s.limitByIP, s.conform)
	e.NoRoute(func(c *gin.Context) { writeProblem(c, http.StatusNotFound, "no such endpoint", nil) })
	e.NoMethod(func(c *gin.Context) {
		writeProblem(c, http.StatusMethodNotAllowed, "method not allowed on this endpoint", nil)
	})

	v1 := e.Group("/api/v1")
	v1.GET("/health", s.health)
	v1.GET("/openapi.json", s.openapi)
	v1.GET("/health/database", s.dependencyHealth("database", s.store.Ping))
	v1.GET("/health/redis", s.dependencyHealth("redis", s.bus.Ping))
	v1.GET("/status", s.require(auth.RoleViewer), s.status)
	v1.GET("/metrics", s.require(auth.RoleViewer), s.summary)
	v1.GET("/agents", s.require(auth.RoleViewer), s.listAgents)
	v1.GET("/agents/:id", s.require(auth.RoleViewer), s.getAgent)
	v1.PATCH("/agents/:id", s.require(auth.RoleAdmin), s.patchAgent)
	v1.GET("/agents/:id/health", s.require(auth.RoleViewer), s.agentHealth)
	v1.GET("/agents/:id/telemetry", s.require(auth.RoleViewer), s.agentTelemetry)
	v1.GET("/commands", s.require(auth.RoleViewer), s.listCommands)
	v1.POST("/commands", s.require(auth.RoleOperator), s.idempotent, s.createCommand)
	v1.POST("/commands/preview", s.require(auth.RoleOperator), s.previewCommand)
	v1.GET("/commands/:id", s.require(auth.RoleViewer), s.getCommand)
	v1.DELETE("/commands/:id", s.require(auth.RoleOperator), s.cancelCommand)
	v1.GET("/events", s.require(auth.RoleViewer), s.streamEvents)
	v1.GET("/alert-rules", s.require(auth.RoleAdmin), s.listAlertRules)
	v1.POST("/alert-rules", s.require(auth.RoleAdmin), s.createAlertRule)
	v1.DELETE("/alert-rules/:id", s.require(auth.RoleAdmin), s.deleteAlertRule)
	v1.GET("/alerts", s.require(auth.RoleViewer), s.listAlerts)
	v1.GET("/webhooks", s.require(auth.RoleAdmin), s.listWebhooks)
	v1.POST("/webhooks", s.require(auth.RoleAdmin), s.createWebhook)
	v1.DELETE("/webhooks/:id", s.require(auth.RoleAdmin), s.deleteWebhook)
	v1.GET("/webhooks/:id/deliveries", s.require(auth.RoleAdmin), s.listDeliveries)
	s.securityRoutes(v1)
	s.identityRoutes(v1)
	s.scheduleRoutes(v1)
	s.engine = e
	return s, nil
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.engine }

// Run receives the event stream from the bus (for clients and the read
// cache) and writes the aggregated authentication failures until ctx is done;
// the last failures are written on the way out.
func (s *Server) Run(ctx context.Context) error {
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.refusals.Run(rctx) })
	if s.reads != nil {
		wg.Go(func() { s.invalidateOnAgentEvents(rctx, cmp.Or(s.cfg.Events.Retry, time.Second)) })
	}
	err := s.hub.Run(ctx)
	stop() // the hub may stop first, on an error
	wg.Wait()
	return err
}

// Drain ends the event streams so that the HTTP server can shut down without
// waiting for them; clients reconnect to another replica.
func (s *Server) Drain(context.Context) { s.hub.Close() }

// EventsReady is closed once the server receives the event stream.
func (s *Server) EventsReady() <-chan struct{} { return s.hub.Ready() }

const (
	ctxPrincipal = "principal"
	ctxRequestID = "request_id"
)

func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	rid := c.GetHeader("X-Request-ID")
	if rid == "" || len(rid) > 128 {
		rid = uuid.NewString()
	}
	c.Set(ctxRequestID, rid)
	c.Header("X-Request-ID", rid)
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	code := c.Writer.Status()
	s.requests.WithLabelValues(route, statusName(code)).Inc()
	s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	s.log.WithFields(logrus.Fields{
		"request_id": rid, "method": c.Request.Method, "route": route, "status": code,
		"duration_ms": float64(time.Since(start).Microseconds()) / 1000,
	}).Debug("http request")
}

func (s *Server) recoverer(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.log.WithFields(logrus.Fields{"request_id": c.GetString(ctxRequestID), "panic": r}).Error("handler panicked")
			writeProblem(c, http.StatusInternalServerError, "internal error", nil)
			c.Abort()
		}
	}()
	c.Next()
}

func (s *Server) health(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{"database": "ok", "redis": "ok"}
	code := http.StatusOK
	if err := s.store.Ping(ctx); err != nil {
		checks["database"], code = "unavailable", http.StatusServiceUnavailable
	}
	if err := s.bus.Ping(ctx); err != nil {
		checks["redis"], code = "unavailable", http.StatusServiceUnavailable
	}
	status := "ok"
	if code != http.StatusOK {
		status = "degraded"
	}
	c.JSON(code, gin.H{"status": status, "checks": checks, "time": time.Now().UTC()})
}

// internalError answers a failed store call. A request whose context is done
// (its deadline passed, its client went away) is answered by requestEnded,
// never as a database outage. While the database is unreachable or
// restarting (the error says so, or the shared probe's ping, at most one a
// second, fails) that is 503 with Retry-After, so clients and load balancers
// retry; any other failure is a 500.
func (s *Server) internalError(c *gin.Context, msg string, err error) {
	if s.requestEnded(c, err) {
		return
	}
	log := s.log.WithError(err).WithField("request_id", c.GetString(ctxRequestID))
	if store.IsUnavailable(err) || s.probe.unreachable(c.Request.Context()) {
		log.WithField("database", "unavailable").Warn(msg)
		c.Header("Retry-After", "2")
		writeProblem(c, http.StatusServiceUnavailable, "the database is unavailable; retry shortly", nil)
		return
	}
	log.Error(msg)
	writeProblem(c, http.StatusInternalServerError, "internal error; see the server log for request "+c.GetString(ctxRequestID), nil)
}

// unavailableProbe bounds the database ping that tells an outage from a bug.
const unavailableProbe = time.Second
