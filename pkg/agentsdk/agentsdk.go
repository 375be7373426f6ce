// Package agentsdk is the library OS-agent authors use to talk to the platform
// over the agent protocol (docs/protocol.md).
//
// An Agent keeps one WebSocket session to a gateway, reconnecting with
// exponential backoff and full jitter, sends HELLO, HEARTBEAT and TELEMETRY,
// runs COMMANDs through the registered handlers and reports their results. A
// result stays in an in-memory outbox until the gateway confirms it with
// RESULT_ACK, and is sent again after every reconnect and, on the same
// session, after every heartbeat interval without that confirmation, so a
// result survives lost bus messages, dropped connections and failed writes on
// the gateway for as long as the process lives.
//
// Every COMMAND is verified before it is acknowledged or run: its Ed25519
// signature (package signing) by a trusted platform key, its target agent id,
// its validity window and its nonce. A refused COMMAND is answered with a
// failed COMMAND_RESULT (exit code ExitCodeRejected) and never run. See
// Config.TrustedKeys and docs/protocol.md.
//
//	a, err := agentsdk.New(agentsdk.Config{
//		URL:         "wss://gateway.example/ws/agent",
//		AgentID:     "web-01",
//		Credential:  token,
//		TrustedKeys: map[string]ed25519.PublicKey{signing.KeyID(platformKey): platformKey},
//		Handlers: map[string]agentsdk.HandlerFunc{
//			"echo": func(ctx context.Context, cmd protocol.Command) agentsdk.Result {
//				return agentsdk.Result{Output: string(cmd.Args)}
//			},
//		},
//	})
//	if err != nil { ... }
//	err = a.Run(ctx) // until ctx is done
package agentsdk

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

// Result is what a handler reports for one execution. The execution succeeded
// when ExitCode is 0 and Error is empty, and failed otherwise. Output and Error
// longer than protocol.MaxOutputBytes and protocol.MaxErrorBytes are cut and
// end with protocol.TruncationMarker; a cut output is reported with
// output_truncated, so the platform shows it was cut.
type Result struct {
	ExitCode int
	Output   string
	Error    string
}

// Status is the protocol status of the result: "succeeded" or "failed".
func (r Result) Status() string {
	if r.ExitCode == 0 && r.Error == "" {
		return protocol.ResultSucceeded
	}
	return protocol.ResultFailed
}

// HandlerFunc runs one command. ctx is cancelled when the platform sends CANCEL
// for the execution (context.Cause(ctx) then wraps ErrCancelled and carries the
// reason) or when the Agent's Run context ends. Handlers must honour ctx.
type HandlerFunc func(ctx context.Context, cmd protocol.Command) Result

// Exit codes the SDK itself reports.
const (
	// ExitCodeUnknownVerb is reported for a verb without a handler.
	ExitCodeUnknownVerb = 127
	// ExitCodeHandlerPanic is reported when a handler panics.
	ExitCodeHandlerPanic = 70
	// ExitCodeCancelled is reported for an execution cancelled before its
	// handler started; handlers may use it for cancelled runs as well.
	ExitCodeCancelled = 130
	// ExitCodeRejected is reported for a COMMAND the agent refused to run
	// because it failed verification (signature, target, expiry, replay);
	// the result's error is "rejected: <reason>".
	ExitCodeRejected = 126
)

// Defaults applied by New.
const (
	DefaultVersion           = "0.0.0"
	DefaultMinBackoff        = 500 * time.Millisecond
	DefaultMaxBackoff        = 30 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxConcurrent     = 16
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultTelemetryInterval = 30 * time.Second
	DefaultMaxClockSkew      = 30 * time.Second
)

const (
	// stableSession is how long a session must last for the backoff to reset
	// even without a WELCOME.
	stableSession = 10 * time.Second
	// outQueueSize bounds the frames waiting for the writer of one connection.
	outQueueSize = 256
	// maxOutbox bounds the results kept while waiting for RESULT_ACK.
	maxOutbox = 4096
	// recentSize is how many acknowledged execution ids are remembered to
	// recognise a re-sent COMMAND.
	recentSize = 1024
	// nonceWindow is how many nonces of accepted COMMANDs are remembered to
	// refuse a replay under another execution id.
	nonceWindow = 4096
	// shutdownGrace bounds how long Run waits for cancelled handlers to return.
	shutdownGrace = 5 * time.Second
	// maxRetryAfter bounds how long a Retry-After header can hold an agent back.
	maxRetryAfter = 5 * time.Minute
)

// ErrCancelled is the cause (see context.Cause) of a handler context cancelled
// by a CANCEL frame; the error wrapping it carries the reason.
var ErrCancelled = errors.New("cancelled by the platform")

// ErrAlreadyRunning is returned by Run when the Agent is already running.
var ErrAlreadyRunning = errors.New("agentsdk: agent is already running")

// Config configures an Agent. Zero values take the documented defaults.
type Config struct {
	// URL of the gateway's agent endpoint: ws://host:port/ws/agent or wss://.
	URL string
	// AgentID identifies the agent; it must match the identity of Credential.
	AgentID string
	// Credential is sent on the upgrade request as "Authorization: Bearer
	// <Credential>". It may be empty when EnrollmentSecret is set (the agent
	// enrolls first) or when Dialer presents a TLS client certificate.
	Credential string
	// EnrollmentSecret lets the agent obtain its own Credential from the
	// gateway's enrollment endpoint (POST /agent/v1/enroll) before connecting,
	// and again (rotating it) whenever the gateway refuses the credential.
	EnrollmentSecret string
	// EnrollURL is the enrollment endpoint; default: URL with ws→http,
	// wss→https and the path /agent/v1/enroll.
	EnrollURL string
	// CredentialFile, when set, keeps the enrolled credential across restarts
	// (written atomically with mode 0600). Default with StateDir:
	// StateDir/credential.
	CredentialFile string
	// StateDir, when set, is the agent's own directory (created with mode
	// 0700) keeping what must survive a restart, each file written
	// atomically with mode 0600: the enrolled credential (the gateway never
	// replaces an enrolled identity, so an agent restarted without it cannot
	// enroll again by itself) and the replay window of accepted COMMANDs
	// (their nonces), so a captured COMMAND replayed after a restart is
	// still refused. Give every agent its own.
	StateDir string

	Site     string
	Version  string // default "0.0.0"
	Hostname string // default os.Hostname()
	OS       string // default runtime.GOOS
	Arch     string // default runtime.GOARCH
	Labels   map[string]string
	// Capabilities announced in HELLO; default: the sorted verbs of Handlers.
	Capabilities []string
	// Handlers maps verbs to the functions that run them.
	Handlers map[string]HandlerFunc
	// Telemetry returns one sample of numeric metrics; nil sends no TELEMETRY.
	// It is called from the connection's writer goroutine: keep it fast.
	// Non-finite values and invalid names are dropped.
	Telemetry func() map[string]float64

	// HeartbeatInterval and TelemetryInterval override the intervals the
	// gateway sends in WELCOME when set (default: the gateway's, or 30s when
	// it sends 0).
	HeartbeatInterval time.Duration
	TelemetryInterval time.Duration

	MinBackoff       time.Duration // default 500ms
	MaxBackoff       time.Duration // default 30s
	HandshakeTimeout time.Duration // default 10s: dial, upgrade and HELLO/WELCOME
	WriteTimeout     time.Duration // default 10s: deadline of each write
	MaxConcurrent    int           // default 16 concurrent handler runs

	// Command verification (docs/protocol.md). There is no default trust:
	// Validate fails unless TrustedKeys, TrustOnFirstUse or
	// InsecureSkipVerify is set. Whatever is set, a COMMAND also runs only
	// when its agent_id is this agent's, it has not expired, it was not
	// issued in the future (both with MaxClockSkew) and its nonce was not
	// used by another execution among the last 4096 accepted.

	// TrustedKeys pins the platform's COMMAND signing keys, by key id
	// (signing.KeyID of the key; see signing.LoadPublicKey). A COMMAND
	// signed by any other key is refused. During a key rotation configure
	// both the previous and the new key. When set, TrustOnFirstUse is
	// ignored.
	TrustedKeys map[string]ed25519.PublicKey
	// TrustOnFirstUse, when TrustedKeys is empty, pins the key announced in
	// the first WELCOME that announces one (signing_key_id and
	// signing_public_key) for the life of the Agent: COMMANDs signed by any
	// other key are refused, and a later WELCOME announcing another key is
	// logged as an error (the session goes on; what that key signs is
	// refused). Nothing is trusted before that first WELCOME, and the pin is
	// not persisted: a restarted process trusts the first gateway it reaches
	// again. TOFU protects against a platform key that changes after the
	// first connection, not against an impostor reached first: prefer
	// TrustedKeys where the key can be distributed.
	TrustOnFirstUse bool
	// InsecureSkipVerify accepts COMMANDs without checking their signature;
	// target, expiry and nonce are still checked. Only for tests and
	// development.
	InsecureSkipVerify bool
	// Clock returns the current time for the validity checks of COMMANDs
	// (default time.Now).
	Clock func() time.Time
	// MaxClockSkew is the clock difference tolerated between agent and
	// platform: a COMMAND is refused once expires_at+MaxClockSkew has passed,
	// or when issued_at is later than now+MaxClockSkew (default 30s).
	MaxClockSkew time.Duration

	// Dialer is used for the WebSocket upgrade (TLS settings, proxies, buffer
	// sizes); default: a dialer like websocket.DefaultDialer with
	// HandshakeTimeout.
	Dialer *websocket.Dialer
	// Logger receives the SDK's logs; default: discarded.
	Logger logrus.FieldLogger
}

func (c Config) withDefaults() Config {
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Hostname == "" {
		if h, err := os.Hostname(); err == nil {
			c.Hostname = h
		}
	}
	if c.OS == "" {
		c.OS = runtime.GOOS
	}
	if c.Arch == "" {
		c.Arch = runtime.GOARCH
	}
	if c.Capabilities == nil {
		c.Capabilities = make([]string, 0, len(c.Handlers))
		for verb := range c.Handlers {
			c.Capabilities = append(c.Capabilities, verb)
		}
		sort.Strings(c.Capabilities)
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.MaxClockSkew == 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.Dialer == nil {
		c.Dialer = &websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: c.HandshakeTimeout,
		}
	}
	if c.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		c.Logger = l
	}
	return c
}

// Validate reports every problem of the configuration (with defaults applied),
// one per line.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("agentsdk: "+format, args...))
	}

	if c.URL == "" {
		bad("URL is required")
	} else if u, err := url.Parse(c.URL); err != nil {
		bad("URL is invalid: %v", err)
	} else if u.Scheme != "ws" && u.Scheme != "wss" {
		bad("URL scheme must be ws or wss, not %q", u.Scheme)
	} else if u.Host == "" {
		bad("URL has no host")
	}

	if err := protocol.CheckID("", c.AgentID); err != nil {
		bad("AgentID %v", err)
	}
	if c.Credential == "" && c.EnrollmentSecret == "" && c.CredentialFile == "" && c.StateDir == "" && !hasClientCert(c.Dialer) {
		bad("Credential, EnrollmentSecret, CredentialFile or StateDir is required (or a TLS client certificate in Dialer)")
	}
	if strings.ContainsFunc(c.Credential, isControl) {
		bad("Credential contains whitespace or control characters")
	}

	for _, f := range []struct{ name, v string }{
		{"Site", c.Site}, {"Version", c.Version}, {"Hostname", c.Hostname}, {"OS", c.OS}, {"Arch", c.Arch},
	} {
		if len(f.v) > protocol.MaxShortFieldLen {
			bad("%s is longer than %d bytes", f.name, protocol.MaxShortFieldLen)
		}
	}
	if len(c.Labels) > protocol.MaxLabels {
		bad("more than %d Labels", protocol.MaxLabels)
	}
	for k, v := range c.Labels {
		if k == "" || len(k) > protocol.MaxShortFieldLen || len(v) > protocol.MaxShortFieldLen {
			bad("label %q: keys must be 1..%d bytes, values at most %d", trunc(k, 64), protocol.MaxShortFieldLen, protocol.MaxShortFieldLen)
		}
	}
	if len(c.Capabilities) > protocol.MaxCapabilities {
		bad("more than %d Capabilities", protocol.MaxCapabilities)
	}
	for _, cp := range c.Capabilities {
		if cp == "" || len(cp) > protocol.MaxShortFieldLen {
			bad("capability %q must be 1..%d bytes", trunc(cp, 64), protocol.MaxShortFieldLen)
		}
	}
	for verb, h := range c.Handlers {
		if verb == "" {
			bad("handler verb must not be empty")
		}
		if h == nil {
			bad("handler for verb %q is nil", verb)
		}
	}

	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HeartbeatInterval", c.HeartbeatInterval}, {"TelemetryInterval", c.TelemetryInterval},
		{"MinBackoff", c.MinBackoff}, {"MaxBackoff", c.MaxBackoff},
		{"HandshakeTimeout", c.HandshakeTimeout}, {"WriteTimeout", c.WriteTimeout},
	} {
		if d.v < 0 {
			bad("%s must not be negative", d.name)
		}
	}
	if c.MinBackoff > c.MaxBackoff {
		bad("MinBackoff (%s) is greater than MaxBackoff (%s)", c.MinBackoff, c.MaxBackoff)
	}
	if c.MaxConcurrent < 0 {
		bad("MaxConcurrent must not be negative")
	}

	if len(c.TrustedKeys) == 0 && !c.TrustOnFirstUse && !c.InsecureSkipVerify {
		bad("no COMMAND signing key is trusted: set TrustedKeys (the platform's public keys), " +
			"TrustOnFirstUse (pin the key of the first WELCOME) or, for tests only, InsecureSkipVerify")
	}
	ids := make([]string, 0, len(c.TrustedKeys))
	for id := range c.TrustedKeys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		k := c.TrustedKeys[id]
		switch {
		case len(k) != ed25519.PublicKeySize:
			bad("TrustedKeys[%q] is %d bytes, not an Ed25519 public key", trunc(id, 64), len(k))
		case id != signing.KeyID(k):
			bad("TrustedKeys[%q]: the key id of that key is %q", trunc(id, 64), signing.KeyID(k))
		}
	}
	if c.MaxClockSkew < 0 {
		bad("MaxClockSkew must not be negative")
	}
	return errors.Join(errs...)
}

func hasClientCert(d *websocket.Dialer) bool {
	return d != nil && d.TLSClientConfig != nil &&
		(len(d.TLSClientConfig.Certificates) > 0 || d.TLSClientConfig.GetClientCertificate != nil)
}

func isControl(r rune) bool { return r <= ' ' || r == 0x7f }

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

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
	}
	if path := cfg.credentialPath(); a.cred == "" && path != "" {
		cred, err := loadCredential(path)
		if err != nil {
			return nil, fmt.Errorf("agentsdk: %w", err)
		}
		a.cred = cred
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
	return time.Duration(rand.Int64N(int64(ceil) + 1))
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
