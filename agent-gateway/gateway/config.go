package gateway

import (
	"errors"
	"time"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/store"
)

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
