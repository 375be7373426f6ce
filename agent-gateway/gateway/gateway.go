// Package gateway is the agent-gateway role: it holds OS agents' WebSockets,
// authenticates them on the upgrade request, keeps their presence in the bus,
// delivers COMMAND frames published on its own topic and persists what agents
// report (results, acks, heartbeats, telemetry).
package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/bus"
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
	AgentsForCredentials(ctx context.Context, credentialHashes []string) ([]string, error)
	AgentEnrollBlocked(ctx context.Context, agentID string) (bool, error)
	RecordAudits(ctx context.Context, es []store.AuditEvent) error
}

// Gateway serves agents.
type Gateway struct {
	cfg      Config
	store    Store
	bus      bus.Bus
	send     *bus.Sender
	presence bus.Presence
	log      logrus.FieldLogger
	upgrader websocket.Upgrader
	metrics  *metrics
	reports  *group[report, store.ResultOutcome]  // acks and results
	online   *group[store.AgentSession, struct{}] // agents marked online by handshakes
	creds    *group[string, string]               // upgrades' credential lookups
	audits   *group[store.AuditEvent, struct{}]
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
	opening  int                  // upgrades past the capacity check whose handshake has not ended
	ended    map[string]time.Time // agent id → when an admin revoked or deleted it (kept endedMemory)
	draining bool

	healthMu sync.Mutex
	health   map[string]store.HealthUpdate
	tel      telemetryBuffer

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
		online:    handshakeGroup("online", st.MarkAgentsOnline, log, m),
		audits:    handshakeGroup("audit", st.RecordAudits, log, m),
		base:      context.Background(),
		limiter:   cfg.Limiter,
		ended:     map[string]time.Time{},
		admission: make(chan struct{}, cfg.MaxHandshakes),
		sessions:  map[string]*session{},
		health:    map[string]store.HealthUpdate{},
		tel:       newTelemetryBuffer(),
		logLimit:  logLimiter{every: logEvery, last: map[string]time.Time{}},
	}
	g.send = bus.NewSender(b, g.log)
	g.reports = g.newReports()
	g.creds = g.newCredentialLookups()
	if g.refusals, err = refusal.New(st, g.log, refusal.Config{Action: "agent.enroll.denied", Window: cfg.RefusalWindow}); err != nil {
		return nil, err
	}
	g.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		// Write buffers only while writing: an idle session holds no write
		// buffer at all. The read buffer is the session's own (see upgrade):
		// ReadBufferSize 0 makes gorilla take it.
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
	defer func() { _ = sub.Close() }()
	endedSub, err := g.bus.Subscribe(ctx, bus.TopicAgents)
	if err != nil {
		return fmt.Errorf("subscribing to agents topic: %w", err)
	}
	defer func() { _ = endedSub.Close() }()
	flushDone := make(chan struct{})
	go func() {
		defer close(flushDone)
		g.flushLoop(ctx)
	}()
	defer func() { <-flushDone }()
	go g.reports.run(ctx)
	defer func() { <-g.reports.done }()
	go g.online.run(ctx)
	defer func() { <-g.online.done }()
	go g.creds.run(ctx)
	defer func() { <-g.creds.done }()
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

// drainTick is the least wait worth a timer while draining; sessions due
// sooner are closed at once.
const drainTick = 5 * time.Millisecond

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
	// Paced by each session's due time, not a sleep per session: with
	// thousands of sessions the gap is below a timer's resolution, and
	// per-session sleeps made a 10 s window last more than 20 s.
	t := time.NewTimer(0)
	defer t.Stop()
	start := time.Now()
	for i, s := range all {
		if wait := time.Until(start.Add(gap * time.Duration(i))); wait >= drainTick && ctx.Err() == nil {
			t.Reset(wait)
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

// readBufferSize is a session's read buffer: it holds any frame header and
// control frame (at most 125 bytes of payload), and gorilla takes a hijacked
// reader as the connection's only when it is larger than 256 bytes. A data
// frame's payload beyond it is read straight into the frame's buffer.
const readBufferSize = 272

// upgrade upgrades the request to a WebSocket whose read buffer the session
// can see: before it waits for the socket to become readable it must know
// that no frame is buffered already.
func (g *Gateway) upgrade(w http.ResponseWriter, r *http.Request) (*websocket.Conn, *bufio.Reader, error) {
	h := &hijacker{ResponseWriter: w}
	conn, err := g.upgrader.Upgrade(h, r, nil)
	return conn, h.br, err
}

// hijacker hands gorilla, on Hijack, a reader of readBufferSize bytes it keeps.
type hijacker struct {
	http.ResponseWriter
	br *bufio.Reader
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the response cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return c, brw, err // gorilla refuses data sent before the handshake's end
	}
	h.br = bufio.NewReaderSize(c, readBufferSize)
	return c, bufio.NewReadWriter(h.br, brw.Writer), nil
}
