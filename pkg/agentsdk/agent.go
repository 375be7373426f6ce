package agentsdk

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

// Agent is one OS agent's connection to the platform. Create it with New and
// drive it with Run; the other methods are safe for concurrent use.
type Agent struct {
	cfg     Config
	log     logrus.FieldLogger
	hello   protocol.Hello
	created time.Time
	sem     chan struct{}
	running atomic.Bool
	// handlers tracks handler goroutines so Run can wait for them.
	handlers sync.WaitGroup

	mu        sync.Mutex
	sess      *session      // current welcomed session, nil when disconnected
	sessionID string        // of sess
	connCh    chan struct{} // closed while connected, replaced on disconnect
	execs     map[string]*execution
	outbox    map[string]*outboxEntry
	outboxSeq uint64
	recent    recentSet
	nonces    nonceSet
	trust     trustState
	cred      string // current credential (Credential, loaded, or enrolled)
	proposal  string // credential proposed by an enrollment whose outcome is unknown

	reconnect atomic.Pointer[reconnectPolicy] // the last WELCOME's; nil: MinBackoff doubling up to MaxBackoff
}

// New applies the defaults to cfg, validates it and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	labels := make(map[string]string, len(cfg.Labels))
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	handlers := make(map[string]HandlerFunc, len(cfg.Handlers))
	for k, v := range cfg.Handlers {
		handlers[k] = v
	}
	cfg.Handlers = handlers
	a := &Agent{
		cfg: cfg,
		log: cfg.Logger.WithField("agent_id", cfg.AgentID),
		hello: protocol.Hello{
			ProtocolVersions: protocol.SupportedVersions,
			AgentID:          cfg.AgentID,
			Site:             cfg.Site,
			Version:          cfg.Version,
			Capabilities:     append([]string{}, cfg.Capabilities...),
			Labels:           labels,
			Hostname:         cfg.Hostname,
			OS:               cfg.OS,
			Arch:             cfg.Arch,
		},
		created: time.Now(),
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		connCh:  make(chan struct{}),
		execs:   make(map[string]*execution),
		outbox:  make(map[string]*outboxEntry),
		recent:  recentSet{set: make(map[string]struct{})},
		nonces:  nonceSet{execs: make(map[string]nonceEntry)},
		cred:    cfg.Credential,
	}
	if cfg.StateDir != "" {
		if err := prepareStateDir(cfg.StateDir); err != nil {
			return nil, fmt.Errorf("agentsdk: %w", err)
		}
		if err := a.loadNonces(); err != nil {
			return nil, fmt.Errorf("agentsdk: %w", err)
		}
		if err := a.loadOutbox(); err != nil {
			return nil, fmt.Errorf("agentsdk: %w", err)
		}
		if err := a.loadInterrupted(); err != nil {
			return nil, fmt.Errorf("agentsdk: %w", err)
		}
	}
	if path := cfg.credentialPath(); a.cred == "" && path != "" {
		cred, err := loadCredential(path)
		if err != nil {
			return nil, fmt.Errorf("agentsdk: %w", err)
		}
		a.cred = cred
	}
	if len(cfg.TrustedKeys) == 0 && cfg.TrustOnFirstUse && cfg.StateDir != "" {
		pub, err := loadPinnedKey(cfg.StateDir)
		if err != nil {
			return nil, fmt.Errorf("agentsdk: %w", err)
		}
		if pub != nil {
			keys := map[string]ed25519.PublicKey{signing.KeyID(pub): pub}
			a.trust = trustState{keys: keys, verifier: signing.NewVerifier(keys)}
			a.log.WithField("key_id", signing.KeyID(pub)).Info("trusting the signing key pinned on first use by an earlier run")
		}
	}
	if len(cfg.TrustedKeys) > 0 {
		keys := make(map[string]ed25519.PublicKey, len(cfg.TrustedKeys))
		for id, k := range cfg.TrustedKeys {
			keys[id] = slices.Clone(k)
		}
		a.trust = trustState{keys: keys, verifier: signing.NewVerifier(keys)}
	}
	return a, nil
}

// ID returns the agent id.
func (a *Agent) ID() string { return a.cfg.AgentID }

// Connected reports whether the agent currently holds a welcomed session.
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sess != nil
}

// SessionID returns the session id of the current session, "" when disconnected.
func (a *Agent) SessionID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessionID
}

// WaitConnected blocks until the agent holds a welcomed session or ctx is done.
func (a *Agent) WaitConnected(ctx context.Context) error {
	a.mu.Lock()
	ch := a.connCh
	a.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RunningCommands returns how many executions are running or waiting to run.
func (a *Agent) RunningCommands() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.execs)
}

// PendingResults returns how many results wait for RESULT_ACK.
func (a *Agent) PendingResults() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.outbox)
}

// Run connects to the gateway and keeps reconnecting, with exponential backoff
// and full jitter, until ctx is done. It returns nil when ctx ends (after
// cancelled handlers returned, waiting at most a few seconds), and
// ErrAlreadyRunning when called while another Run is active.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer a.running.Store(false)
	defer a.waitHandlers()

	attempt := 0
	timer := time.NewTimer(0)
	if !timer.Stop() {
		<-timer.C
	}
	defer timer.Stop()
	for {
		start := time.Now()
		out := a.runSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if out.welcomed || time.Since(start) > stableSession {
			attempt = 0
		}
		delay := backoff(a.cfg.MinBackoff, a.cfg.MaxBackoff, a.reconnect.Load(), attempt)
		if out.retryAfter > 0 {
			delay += min(out.retryAfter, a.cfg.MaxBackoff)
		}
		attempt++
		entry := a.log.WithError(out.err).WithFields(logrus.Fields{"attempt": attempt, "retry_in": delay.String()})
		switch {
		case out.authRejected:
			entry.Warn("gateway rejected the agent credential")
		case out.welcomed:
			entry.Info("agent disconnected")
		default:
			entry.Info("agent connection failed")
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

// reconnectPolicy is the reconnect backoff a gateway advertised in WELCOME.
type reconnectPolicy struct {
	base      time.Duration // reconnect_backoff_ms: the first delay
	doublings int           // max_reconnect_attempts - 1: how often it doubles
}

// reconnectFrom is w's reconnect policy; nil when w advertises none.
func reconnectFrom(w *protocol.Welcome) *reconnectPolicy {
	if w.ReconnectBackoffMs <= 0 {
		return nil
	}
	return &reconnectPolicy{base: time.Duration(w.ReconnectBackoffMs) * time.Millisecond, doublings: max(w.MaxReconnectAttempts-1, 0)}
}

// backoff returns a full-jitter delay: a uniform random duration in
// [0, ceil], ceil at most maxD. Without a policy ceil is minD*2^attempt. With
// a gateway's policy (WELCOME) it is base*2^attempt for the first
// max_reconnect_attempts attempts, then stays at the longest of those: the
// agent keeps trying, it never gives up.
func backoff(minD, maxD time.Duration, p *reconnectPolicy, attempt int) time.Duration {
	ceil, doublings := minD, attempt
	if p != nil {
		ceil, doublings = p.base, min(attempt, p.doublings)
	}
	for i := 0; i < doublings && ceil < maxD; i++ {
		ceil *= 2
	}
	ceil = min(ceil, maxD)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1)) //nolint:gosec // G404: reconnect jitter, not a secret
}

func (a *Agent) waitHandlers() {
	done := make(chan struct{})
	go func() {
		a.handlers.Wait()
		close(done)
	}()
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		a.log.WithField("running_commands", a.RunningCommands()).Warn("handlers still running after shutdown grace period")
	}
}
