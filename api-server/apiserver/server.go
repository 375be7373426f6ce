// Package apiserver is the api-server role: the stateless REST API of DESIGN §4
// (gin), behind JWT with roles, answering errors as RFC 9457 problem+json.
package apiserver

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
)

// Store is the durable state the API reads and writes.
type Store interface {
	CreateCommand(ctx context.Context, nc store.NewCommand) (store.Command, []store.Execution, error)
	GetCommand(ctx context.Context, id string) (store.Command, []store.Execution, error)
	CancelCommand(ctx context.Context, id, actor, requestID string) ([]store.Timeout, error)
	ListAgents(ctx context.Context, f store.AgentFilter) ([]store.Agent, error)
	Ping(ctx context.Context) error

	CreateAlertRule(ctx context.Context, nr store.NewAlertRule) (store.AlertRule, error)
	ListAlertRules(ctx context.Context, p store.Page) ([]store.AlertRule, string, error)
	DeleteAlertRule(ctx context.Context, id string, audit store.AuditEvent) error
	ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, string, error)
	CreateWebhook(ctx context.Context, nw store.NewWebhook) (store.Webhook, error)
	ListWebhooks(ctx context.Context, p store.Page) ([]store.Webhook, string, error)
	GetWebhook(ctx context.Context, id string) (store.Webhook, error)
	DeleteWebhook(ctx context.Context, id string, audit store.AuditEvent) error
	ListDeliveries(ctx context.Context, f store.DeliveryFilter) ([]store.WebhookDelivery, string, error)
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
	MaxQueued         int // bound on queued executions (max_command_queue_size); 0: unbounded
}

func (c *Config) setDefaults() {
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 60 * time.Second
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
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.DefaultTimeout > maxTimeout {
		return errors.New("apiserver: default command timeout exceeds 24h")
	}
	return nil
}

// Server is the REST API.
type Server struct {
	cfg      Config
	store    Store
	bus      bus.Bus
	verifier Verifier
	log      logrus.FieldLogger
	engine   *gin.Engine
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New builds the API.
func New(st Store, b bus.Bus, v Verifier, reg prometheus.Registerer, log logrus.FieldLogger, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, store: st, bus: b, verifier: v, log: log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_api_requests_total", Help: "API requests by route and status code."}, []string{"route", "code"}),
		latency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "viworks_api_request_duration_seconds", Help: "API request latency by route.", Buckets: prometheus.DefBuckets}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(s.requests, s.latency)
	}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	e.Use(s.recoverer, s.observe)
	e.NoRoute(func(c *gin.Context) { writeProblem(c, http.StatusNotFound, "no such endpoint", nil) })
	e.NoMethod(func(c *gin.Context) {
		writeProblem(c, http.StatusMethodNotAllowed, "method not allowed on this endpoint", nil)
	})

	v1 := e.Group("/api/v1")
	v1.GET("/health", s.health)
	v1.GET("/agents", s.require(auth.RoleViewer), s.listAgents)
	v1.POST("/commands", s.require(auth.RoleOperator), s.createCommand)
	v1.GET("/commands/:id", s.require(auth.RoleViewer), s.getCommand)
	v1.DELETE("/commands/:id", s.require(auth.RoleOperator), s.cancelCommand)
	v1.GET("/alert-rules", s.require(auth.RoleAdmin), s.listAlertRules)
	v1.POST("/alert-rules", s.require(auth.RoleAdmin), s.createAlertRule)
	v1.DELETE("/alert-rules/:id", s.require(auth.RoleAdmin), s.deleteAlertRule)
	v1.GET("/alerts", s.require(auth.RoleViewer), s.listAlerts)
	v1.GET("/webhooks", s.require(auth.RoleAdmin), s.listWebhooks)
	v1.POST("/webhooks", s.require(auth.RoleAdmin), s.createWebhook)
	v1.DELETE("/webhooks/:id", s.require(auth.RoleAdmin), s.deleteWebhook)
	v1.GET("/webhooks/:id/deliveries", s.require(auth.RoleAdmin), s.listDeliveries)
	s.engine = e
	return s, nil
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler { return s.engine }

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
	s.requests.WithLabelValues(route, http.StatusText(code)).Inc()
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

// internalError answers a failed store call. While the database is
// unreachable or restarting (the error says so, or a ping fails) that is 503
// with Retry-After, so clients and load balancers retry; any other failure is
// a 500.
func (s *Server) internalError(c *gin.Context, msg string, err error) {
	log := s.log.WithError(err).WithField("request_id", c.GetString(ctxRequestID))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), unavailableProbe)
	defer cancel()
	if store.IsUnavailable(err) || s.store.Ping(ctx) != nil {
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
