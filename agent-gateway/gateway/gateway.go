// Package gateway is the agent-gateway role: it holds OS agents' WebSockets,
// authenticates them on the upgrade request, keeps their presence in the bus,
// delivers COMMAND frames published on its own topic and persists what agents
// report (results, acks, heartbeats, telemetry).
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/problem"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/refusal"
	"github.com/viworks/backend-agent/pkg/store"
)

// Store is the durable state the gateway writes.
type Store interface {
	MarkAgentsOnline(ctx context.Context, as []store.AgentSession) error
	MarkAgentOffline(ctx context.Context, agentID, sessionID string, at time.Time) (bool, error)
	TouchAgents(ctx context.Context, ups []store.HealthUpdate) error
	RecordBatch(ctx context.Context, b store.Batch) (store.BatchOutcome, error)
	ReleaseAgentExecutions(ctx context.Context, agentID, gatewayID string, policy store.RetryPolicy) ([]string, error)
	InsertTelemetry(ctx context.Context, samples []store.TelemetrySample) error
	SigningKeys(ctx context.Context) ([]store.SigningKey, error)
	EnrollBootstrap(ctx context.Context, agentID, credentialHash string, maxAgents int, now time.Time) error
	EnrollWithSecret(ctx context.Context, secretHash, agentID, credentialHash string, now time.Time) (store.EnrollmentSecret, error)
	ReenrollAgent(ctx context.Context, agentID, secretHash, credentialHash string, now time.Time) error
	RotateAgentCredential(ctx context.Context, agentID, currentHash, newHash string, now time.Time) error
	AgentForCredential(ctx context.Context, credentialHash string) (string, error)
	AgentEnrollBlocked(ctx context.Context, agentID string) (bool, error)
	RecordAudits(ctx context.Context, es []store.AuditEvent) error
}

// DefaultHelloTimeout is Config.HelloTimeout's default.
const DefaultHelloTimeout = config.DefaultHelloTimeoutSeconds * time.Second

// Config configures a gateway.
type Config struct {
	GatewayID         string
	EnrollmentSecret  string        // bootstrap secret agents exchange for their own credential; "": only secrets from the API
	HeartbeatInterval time.Duration // told to agents; presence lives config.OfflineHeartbeats intervals
	TelemetryInterval time.Duration
	MaxConnections    int
	ReadLimit         int64
	HandshakeTimeout  time.Duration // the HTTP upgrade
	HelloTimeout      time.Duration // upgrade to a valid HELLO; beyond it the socket is closed with 1008
	WriteTimeout      time.Duration
	SendQueue         int               // frames buffered per session before it is dropped as slow
	FlushInterval     time.Duration     // heartbeat (last_seen) and telemetry flush period
	TelemetryBatch    int               // flush telemetry early at this many samples
	Retry             store.RetryPolicy // for executions cut off by a disconnect
	DrainWindow       time.Duration     // sessions are closed spread over this on shutdown
	MaxHandshakes     int               // enrollments and upgrades-until-registered in flight; beyond: 503
	MaxFrameRate      int               // frames per second per agent (bursts of twice that)
	Events            *events.Publisher // optional: agents online/offline are published here (execution progress: the store's observer)
	// TrustReported takes agents' HELLO site and labels as trusted when
	// nothing fixed them (trust_reported_attributes; unsafe).
	TrustReported bool
	// BootstrapMaxAgents caps the identities EnrollmentSecret creates
	// (agent_management.bootstrap_max_agents); 0: unlimited.
	BootstrapMaxAgents int
	// ReconnectBackoff and MaxReconnectAttempts are advertised in WELCOME
	// (agent_management.reconnect_backoff_ms, max_reconnect_attempts): the
	// agents' first reconnect delay and how many reconnects it doubles for.
	// Zero: not advertised (agents use their own).
	ReconnectBackoff     time.Duration
	MaxReconnectAttempts int
	// Limiter counts failed enrollments per client address; give every
	// gateway the same (Redis) one so N gateways do not allow N times the
	// guesses. nil: this process's memory (all-in-one).
	Limiter       ratelimit.Limiter
	RefusalWindow time.Duration // refused enrollments are audited once per address per window (default refusal.DefaultWindow)
}

func (c *Config) setDefaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = config.DefaultHeartbeatIntervalSeconds * time.Second
	}
	if c.TelemetryInterval <= 0 {
		c.TelemetryInterval = config.DefaultCollectionIntervalSeconds * time.Second
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = config.DefaultMaxAgentConnections
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = protocol.DefaultReadLimit
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = config.DefaultConnectionTimeoutSeconds * time.Second
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = DefaultHelloTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 256
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = config.DefaultFlushIntervalSeconds * time.Second
	}
	if c.TelemetryBatch <= 0 {
		c.TelemetryBatch = config.DefaultTelemetryBatchSize
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 256
	}
	if c.MaxFrameRate <= 0 {
		c.MaxFrameRate = config.DefaultMaxFramesPerSecond
	}
	if c.Retry.Base <= 0 {
		c.Retry.Base = config.DefaultRetryDelayMs * time.Millisecond
	}
	if c.Retry.Max <= 0 {
		c.Retry.Max = 5 * time.Minute
	}
	if c.Limiter == nil {
		c.Limiter = ratelimit.NewMemory(ratelimit.MemoryConfig{})
	}
}

// silenceLimit is how long an agent may stay silent on its socket before the
// gateway gives up on it: its read deadline and its presence's TTL. The same
// count of missed heartbeats after which the scheduler marks it offline.
func (c Config) silenceLimit() time.Duration {
	return config.OfflineHeartbeats * c.HeartbeatInterval
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.GatewayID == "" {
		errs = append(errs, errors.New("gateway: id is required"))
	}
	if c.BootstrapMaxAgents < 0 {
		errs = append(errs, errors.New("gateway: the bootstrap enrollment cap must not be negative"))
	}
	return errors.Join(errs...)
}

// Gateway serves agents.
type Gateway struct {
	cfg      Config
	store    Store
	bus      bus.Bus
	presence bus.Presence
	log      logrus.FieldLogger
	upgrader websocket.Upgrader
	metrics  *metrics
	commits  *committer
	online   *group[store.AgentSession] // agents marked online by handshakes
	audits   *group[store.AuditEvent]
	refusals *refusal.Aggregator // refused enrollments, one audit event per address and minute
	issued   issuedCreds
	base     context.Context // sessions' context: holds nothing of the upgrade request

	limiter   ratelimit.Limiter // failed enrollments per address
	logLimit  logLimiter        // agents' repeated mistakes are logged a few times, then counted
	admission chan struct{}     // bounded handshakes: a reconnect storm queues at the agents, not in Postgres
	waiting   atomic.Int64      // requests waiting for a handshake slot
	admitted  atomic.Int64      // handshakes admitted since start (for the memory trim after a storm)

	mu       sync.Mutex
	sessions map[string]*session  // agent id → current session
	ended    map[string]time.Time // agent id → when an admin revoked or deleted it (kept endedMemory)
	draining bool

	healthMu sync.Mutex
	health   map[string]store.HealthUpdate
	telMu    sync.Mutex
	tel      []store.TelemetrySample
	telKick  chan struct{}

	keyMu sync.RWMutex
	key   store.SigningKey // newest registered signing key, announced in WELCOME

	wg sync.WaitGroup // live sessions
}

// New builds a gateway.
func New(st Store, b bus.Bus, p bus.Presence, reg prometheus.Registerer, log logrus.FieldLogger, cfg Config) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := newMetrics(reg)
	var err error
	g := &Gateway{
		cfg: cfg, store: st, bus: b, presence: p, log: log.WithField("gateway_id", cfg.GatewayID),
		metrics:   m,
		commits:   newCommitter(st, b, log, m.batchSize),
		online:    newGroup("online", st.MarkAgentsOnline, log, m),
		audits:    newGroup("audit", st.RecordAudits, log, m),
		base:      context.Background(),
		limiter:   cfg.Limiter,
		ended:     map[string]time.Time{},
		admission: make(chan struct{}, cfg.MaxHandshakes),
		sessions:  map[string]*session{},
		health:    map[string]store.HealthUpdate{},
		telKick:   make(chan struct{}, 1),
		logLimit:  logLimiter{every: logEvery, last: map[string]time.Time{}},
	}
	if g.refusals, err = refusal.New(st, g.log, refusal.Config{Action: "agent.enroll.denied", Window: cfg.RefusalWindow}); err != nil {
		return nil, err
	}
	g.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// Small buffers, and write buffers only while writing: an idle session
		// holds no write buffer at all. 128 bytes hold any frame header and
		// control frame (at most 125 bytes of payload); a data frame's payload
		// beyond it is read straight into the message.
		ReadBufferSize:  128,
		WriteBufferSize: 4096,
		WriteBufferPool: &sync.Pool{},
		// Agents are not browsers; a browser's Origin must match the host.
		CheckOrigin: func(r *http.Request) bool {
			origin := r.Header.Get("Origin")
			if origin == "" {
				return true
			}
			return strings.EqualFold(strings.TrimPrefix(strings.TrimPrefix(origin, "https://"), "http://"), r.Host)
		},
	}
	if cfg.TrustReported {
		g.log.Warn("agents' HELLO site and labels are trusted for targeting where nothing fixed them (trust_reported_attributes): anyone who can enroll can claim any site")
	}
	return g, nil
}

// Register mounts the agent endpoint on mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /ws/agent", g.serveWS)
	mux.HandleFunc("POST /agent/v1/enroll", g.serveEnroll)
}

// Run subscribes to the gateway's topic and flushes batches until ctx is done.
func (g *Gateway) Run(ctx context.Context) error {
	g.refreshKey(ctx)
	sub, err := g.bus.Subscribe(ctx, bus.GatewayTopic(g.cfg.GatewayID))
	if err != nil {
		return fmt.Errorf("subscribing to gateway topic: %w", err)
	}
	defer sub.Close()
	endedSub, err := g.bus.Subscribe(ctx, bus.TopicAgents)
	if err != nil {
		return fmt.Errorf("subscribing to agents topic: %w", err)
	}
	defer endedSub.Close()
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		g.flushLoop(ctx)
	}()
	defer func() { <-flushDone }()
	go g.commits.run(ctx)
	defer func() { <-g.commits.done }()
	go g.online.run(ctx)
	defer func() { <-g.online.done }()
	go g.audits.run(ctx)
	defer func() { <-g.audits.done }()
	rctx, stopRefusals := context.WithCancel(ctx)
	refusalsDone := make(chan struct{})
	go func() {
		defer close(refusalsDone)
		_ = g.refusals.Run(rctx)
	}()
	defer func() {
		stopRefusals() // Run may return on an error before ctx ends
		<-refusalsDone
	}()
	go g.pingLoop(ctx)
	go g.trimLoop(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-sub.Messages():
			if !ok {
				return errors.New("gateway topic subscription closed")
			}
			g.handleDelivery(ctx, m.Payload)
		case m, ok := <-endedSub.Messages():
			if !ok {
				return errors.New("agents topic subscription closed")
			}
			g.handleEnded(m.Payload)
		}
	}
}

// endedMemory is how long a revocation is remembered for the handshakes that
// authenticated before it and register after it.
const endedMemory = time.Minute

// handleEnded applies an admin's revocation or deletion of an agent: the
// credential this gateway may have cached is dropped and the agent's session
// here is closed.
func (g *Gateway) handleEnded(payload []byte) {
	var e bus.AgentEnded
	if err := json.Unmarshal(payload, &e); err != nil || e.AgentID == "" {
		g.log.Warn("dropping malformed agents message")
		return
	}
	g.issued.forget(e.AgentID)
	g.mu.Lock()
	g.ended[e.AgentID] = time.Now()
	s := g.sessions[e.AgentID]
	g.mu.Unlock()
	if s != nil {
		g.metrics.closed.WithLabelValues("revoked").Inc()
		s.close(protocol.ClosePolicyViolation, e.Reason)
	}
}

// endedSince reports whether an admin revoked or deleted agentID after t.
func (g *Gateway) endedSince(agentID string, t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, ok := g.ended[agentID]
	return ok && !at.Before(t)
}

// forgetEnded drops revocations older than endedMemory.
func (g *Gateway) forgetEnded(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, at := range g.ended {
		if now.Sub(at) > endedMemory {
			delete(g.ended, id)
		}
	}
}

// Shutdown refuses new upgrades, closes every session with 1012 (service
// restart) spread evenly over the drain window so agents reconnect elsewhere
// without a stampede (the rest at once if ctx ends first), waits for their
// cleanup, and flushes pending batches.
func (g *Gateway) Shutdown(ctx context.Context) {
	g.mu.Lock()
	g.draining = true
	all := make([]*session, 0, len(g.sessions))
	for _, s := range g.sessions {
		all = append(all, s)
	}
	g.mu.Unlock()
	var gap time.Duration
	if len(all) > 0 {
		gap = g.cfg.DrainWindow / time.Duration(len(all))
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for _, s := range all {
		if gap > 0 && ctx.Err() == nil {
			t.Reset(gap)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		s.close(protocol.CloseServiceRestart, "gateway shutting down")
	}
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	g.flush(context.WithoutCancel(ctx))
}

// pingLoop pings every session once per heartbeat interval from one goroutine.
func (g *Gateway) pingLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		all := make([]*session, 0, len(g.sessions))
		for _, s := range g.sessions {
			all = append(all, s)
		}
		g.mu.Unlock()
		for _, s := range all {
			s.ping()
		}
	}
}

// Handshake admission: a request waits up to admitWait for one of
// MaxHandshakes slots, with at most admitQueue waiting per slot; beyond that it
// gets 503 with Retry-After and the agent backs off with jitter. So a storm is
// admitted at the rate the database sustains and never reaches it unthrottled.
const (
	admitWait  = 2 * time.Second
	admitQueue = 4
)

func (g *Gateway) admit(w http.ResponseWriter) (release func(), ok bool) {
	if g.waiting.Add(1) > int64(admitQueue*cap(g.admission)) {
		g.waiting.Add(-1)
		return nil, g.busy(w)
	}
	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case g.admission <- struct{}{}:
		g.waiting.Add(-1)
		g.admitted.Add(1)
		var once sync.Once
		return func() { once.Do(func() { <-g.admission }) }, true
	case <-t.C:
		g.waiting.Add(-1)
		return nil, g.busy(w)
	}
}

func (g *Gateway) busy(w http.ResponseWriter) bool {
	g.metrics.rejected.WithLabelValues("busy").Inc()
	w.Header().Set("Retry-After", "1")
	problem.Write(w, http.StatusServiceUnavailable, "too many agents are connecting at once; retry shortly", "", nil)
	return false
}

func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	release, ok := g.admit(w)
	if !ok {
		return
	}
	handedOver := false
	defer func() {
		if !handedOver {
			release()
		}
	}()
	agentID, err := g.authenticate(r)
	if err != nil {
		if !errors.Is(err, store.ErrUnknownCredential) {
			g.log.WithError(err).Error("checking agent credential failed")
			w.Header().Set("Retry-After", "5")
			problem.Write(w, http.StatusServiceUnavailable, "could not check the credential; retry later", r.URL.Path, nil)
			return
		}
		g.metrics.rejected.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="agents"`)
		problem.Write(w, http.StatusUnauthorized, "a valid agent credential is required in the Authorization header; enroll at /agent/v1/enroll", r.URL.Path, nil)
		return
	}
	g.mu.Lock()
	full := len(g.sessions) >= g.cfg.MaxConnections
	draining := g.draining
	g.mu.Unlock()
	if full || draining {
		g.metrics.rejected.WithLabelValues("capacity").Inc()
		w.Header().Set("Retry-After", "5")
		problem.Write(w, http.StatusServiceUnavailable, "this gateway accepts no more agents; retry later", r.URL.Path, nil)
		return
	}
	conn, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	handedOver = true
	remote := r.RemoteAddr
	ctx := g.base // not the request's: a session outlives it and must not keep it alive
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		s := newSession(g, conn, remote, agentID)
		if !s.handshake(ctx, release, started) {
			return
		}
		// The handshake's database calls grew this goroutine's stack; a fresh
		// goroutine, with a small stack, holds the session for its lifetime.
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			s.serve(ctx)
		}()
	}()
}

// attach makes s the agent's current session, returning the one it replaces.
func (g *Gateway) attach(s *session) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.sessions[s.agentID]
	g.sessions[s.agentID] = s
	g.metrics.sessions.Set(float64(len(g.sessions)))
	return old
}

// detach removes s if it is still the agent's current session.
func (g *Gateway) detach(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sessions[s.agentID] != s {
		return false
	}
	delete(g.sessions, s.agentID)
	g.metrics.sessions.Set(float64(len(g.sessions)))
	return true
}

func (g *Gateway) lookup(agentID string) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[agentID]
}

func (g *Gateway) handleDelivery(ctx context.Context, payload []byte) {
	var ds bus.Deliveries
	if err := json.Unmarshal(payload, &ds); err != nil {
		g.log.WithError(err).Warn("dropping malformed bus delivery")
		return
	}
	var undelivered []bus.Delivery
	for _, d := range ds.Items {
		if !g.deliver(d) && d.ExecutionID != "" {
			undelivered = append(undelivered, d)
		}
	}
	// Tell the schedulers at once so they re-route instead of waiting for the ack deadline.
	for _, d := range undelivered {
		wake := bus.Encode(bus.Wake{Reason: bus.WakeUndelivered, AgentID: d.AgentID, ExecutionID: d.ExecutionID})
		if _, err := g.bus.Publish(ctx, bus.TopicScheduler, wake); err != nil {
			g.log.WithError(err).WithField("execution_id", d.ExecutionID).Warn("reporting undelivered execution failed")
		}
	}
}

// deliver hands one delivery to its session; false when the agent's session is not here.
func (g *Gateway) deliver(d bus.Delivery) bool {
	s := g.lookup(d.AgentID)
	if d.Kick {
		if s != nil && s.id == d.SessionID {
			s.close(protocol.ClosePolicyViolation, "replaced by a newer session")
		}
		return true
	}
	if s != nil && (d.SessionID == "" || d.SessionID == s.id) && s.send(d.Frame) {
		g.metrics.delivered.Inc()
		return true
	}
	g.metrics.undelivered.Inc()
	return false
}

// refreshKey loads the newest signing key the schedulers registered.
func (g *Gateway) refreshKey(ctx context.Context) {
	keys, err := g.store.SigningKeys(ctx)
	if err != nil {
		g.log.WithError(err).Warn("loading signing keys failed")
		return
	}
	if len(keys) == 0 {
		return
	}
	g.keyMu.Lock()
	g.key = keys[0]
	g.keyMu.Unlock()
}

func (g *Gateway) signingKey() store.SigningKey {
	g.keyMu.RLock()
	defer g.keyMu.RUnlock()
	return g.key
}

func (g *Gateway) noteHealth(u store.HealthUpdate) {
	g.healthMu.Lock()
	g.health[u.AgentID] = u
	g.healthMu.Unlock()
}

func (g *Gateway) addTelemetry(s store.TelemetrySample) {
	g.telMu.Lock()
	g.tel = append(g.tel, s)
	n := len(g.tel)
	g.telMu.Unlock()
	if n >= g.cfg.TelemetryBatch {
		select {
		case g.telKick <- struct{}{}:
		default:
		}
	}
}

func (g *Gateway) flushLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.flush(ctx)
			g.refreshKey(ctx)
			g.issued.sweep(time.Now())
			g.forgetEnded(time.Now())
		case <-g.telKick:
			g.flushTelemetry(ctx)
		}
	}
}

func (g *Gateway) flush(ctx context.Context) {
	g.healthMu.Lock()
	ups := make([]store.HealthUpdate, 0, len(g.health))
	for _, u := range g.health {
		ups = append(ups, u)
	}
	// A new map rather than clear: the old one's buckets, sized for a burst,
	// are not kept for the gateway's lifetime.
	g.health = make(map[string]store.HealthUpdate, len(ups)/2)
	g.healthMu.Unlock()
	if len(ups) > 0 {
		start := time.Now()
		if err := g.store.TouchAgents(ctx, ups); err != nil {
			g.log.WithError(err).WithField("agents", len(ups)).Error("flushing heartbeats failed")
		}
		g.metrics.flush.WithLabelValues("heartbeats").Observe(time.Since(start).Seconds())
	}
	g.refreshPresences(ctx, ups)
	g.flushTelemetry(ctx)
}

// refreshPresences extends the presence of the agents that sent heartbeats,
// in one round trip. An entry found gone (Redis restarted or lost it) is
// registered again; one naming another session means the agent connected
// again elsewhere, so this stale session is closed.
func (g *Gateway) refreshPresences(ctx context.Context, ups []store.HealthUpdate) {
	if len(ups) == 0 {
		return
	}
	sessions := make(map[string]*session, len(ups))
	entries := make(map[string]bus.Entry, len(ups))
	g.mu.Lock()
	for _, u := range ups {
		if s := g.sessions[u.AgentID]; s != nil && s.agentID != "" {
			sessions[u.AgentID], entries[u.AgentID] = s, s.entry
		}
	}
	g.mu.Unlock()
	ttl := g.cfg.silenceLimit()
	got, err := g.presence.RefreshPresences(ctx, entries, ttl)
	if err != nil {
		g.log.WithError(err).WithField("agents", len(entries)).Warn("refreshing presence failed")
		return
	}
	for id, r := range got {
		switch r {
		case bus.Missing:
			if _, err := g.presence.SetPresence(ctx, id, entries[id], ttl); err != nil {
				g.log.WithError(err).WithField("agent_id", id).Warn("registering presence again failed")
				continue
			}
			g.metrics.presenceHealed.Inc()
		case bus.Replaced:
			sessions[id].close(protocol.ClosePolicyViolation, "replaced by a newer session")
		}
	}
}

func (g *Gateway) flushTelemetry(ctx context.Context) {
	g.telMu.Lock()
	batch := g.tel
	g.tel = nil
	g.telMu.Unlock()
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	err := g.store.InsertTelemetry(ctx, batch)
	g.metrics.flush.WithLabelValues("telemetry").Observe(time.Since(start).Seconds())
	if err != nil {
		g.metrics.telemetryDropped.Add(float64(len(batch)))
		g.log.WithError(err).WithField("samples", len(batch)).Error("flushing telemetry failed")
		return
	}
	g.metrics.telemetryStored.Add(float64(len(batch)))
}
