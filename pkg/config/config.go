// Package config loads, validates and redacts the configuration shared by the three
// service binaries (api-server, agent-gateway, scheduler), as README's Configuration describes:
// the seed's defaults, overlaid by a TOML file (--config), then the seed's environment
// variables, then command-line flags.
package config

import (
	"net"
	"strconv"
	"time"
)

// Config is the whole configuration of a service binary. The TOML sections and keys
// are those of the seed configuration file.
type Config struct {
	Server          Server          `toml:"server"`
	Database        Database        `toml:"database"`
	Redis           Redis           `toml:"redis"`
	Security        Security        `toml:"security"`
	AgentManagement AgentManagement `toml:"agent_management"`
	Command         Command         `toml:"command"`
	Telemetry       Telemetry       `toml:"telemetry"`
	Logging         Logging         `toml:"logging"`
	Alerts          Alerts          `toml:"alerts"`
}

// Server is the [server] section: the HTTP listener and process lifecycle.
type Server struct {
	// BindAddress is the address to listen on (env BACKEND_AGENT_BIND_ADDRESS).
	BindAddress string `toml:"bind_address"`
	// Port is the TCP port to listen on, 1..65535 (env BACKEND_AGENT_PORT).
	Port int `toml:"port"`
	// Workers is the number of goroutines a scheduler signs and encodes a
	// dispatch batch's COMMAND frames with (env BACKEND_AGENT_WORKERS); 0:
	// DefaultWorkers.
	Workers int `toml:"workers"`
	// MaxConnections is the API's bound on requests in flight per replica;
	// beyond it a request answers 503 with Retry-After at once (health checks
	// and event streams are not counted).
	MaxConnections int `toml:"max_connections"`
	// RequestTimeout is the API's deadline on one request, in seconds (not on
	// event streams or health checks): past it the request answers 503.
	RequestTimeout int `toml:"request_timeout"`
	// MaxEventStreamsPerPrincipal bounds the event streams (GET /api/v1/events)
	// one principal may hold open on one replica; beyond it the API answers 429.
	MaxEventStreamsPerPrincipal int `toml:"max_event_streams_per_principal"`
	// DevMode relaxes the secret checks for local development (env
	// VIWORKS_DEV_MODE): a placeholder JWT secret is replaced by a random one
	// generated at start, and the server binds to 127.0.0.1 unless
	// bind_address is set explicitly.
	DevMode bool `toml:"dev_mode"`
	// InstanceID identifies this replica (for example the gateway id); empty means the
	// binary picks one. When set: 1..64 characters of [A-Za-z0-9._-] (env VIWORKS_INSTANCE_ID).
	InstanceID string `toml:"instance_id"`
	// ShutdownTimeout is how long a graceful shutdown may take, in seconds.
	ShutdownTimeout int `toml:"shutdown_timeout"`
	// Pprof serves Go's profiler at /debug/pprof/ on the service port (env
	// VIWORKS_PPROF); off by default, for diagnosing memory and CPU.
	Pprof bool `toml:"pprof"`
}

// Database is the [database] section: the PostgreSQL connection pool.
type Database struct {
	// URL is a postgres:// or postgresql:// URL or a key=value DSN (env DATABASE_URL).
	URL string `toml:"url"`
	// MaxConnections is the maximum size of the pool (env DATABASE_MAX_CONNECTIONS).
	MaxConnections int `toml:"max_connections"`
	// MinConnections is the number of idle connections kept open.
	MinConnections int `toml:"min_connections"`
	// ConnectTimeout is the timeout for opening a connection, in seconds.
	ConnectTimeout int `toml:"connect_timeout"`
	// IdleTimeout is how long an idle connection is kept, in seconds.
	IdleTimeout int `toml:"idle_timeout"`
	// MaxLifetime is the maximum age of a connection, in seconds.
	MaxLifetime int `toml:"max_lifetime"`
}

// Redis is the [redis] section: the Redis client used for the bus and presence.
type Redis struct {
	// URL is a redis:// or rediss:// URL (env REDIS_URL).
	URL string `toml:"url"`
	// PoolSize is the maximum number of connections (env REDIS_POOL_SIZE).
	PoolSize int `toml:"pool_size"`
	// ConnectionTimeout is the dial timeout, in seconds.
	ConnectionTimeout int `toml:"connection_timeout"`
	// ReadTimeout is the socket read timeout, in seconds.
	ReadTimeout int `toml:"read_timeout"`
	// WriteTimeout is the socket write timeout, in seconds.
	WriteTimeout int `toml:"write_timeout"`
	// KeyPrefix prefixes every Redis key and channel, so that several installations or
	// test runs can share one Redis (env REDIS_KEY_PREFIX).
	KeyPrefix string `toml:"key_prefix"`
}

// Security is the [security] section: JWTs, keys, rate limits and enrollment.
type Security struct {
	// JWTSecret is the HMAC key for API tokens (env JWT_SECRET). Secret.
	JWTSecret string `toml:"jwt_secret"`
	// JWTExpiration is the lifetime of an issued token, in seconds (env JWT_EXPIRATION).
	JWTExpiration int `toml:"jwt_expiration"`
	// MaxTokenLifetime is the longest lifetime (exp − iat) of a token the API
	// accepts or issues, in seconds (env MAX_TOKEN_LIFETIME).
	MaxTokenLifetime int `toml:"max_token_lifetime"`
	// BackendPrivateKeyPath is the path of the key used to sign commands (env BACKEND_PRIVATE_KEY_PATH).
	BackendPrivateKeyPath string `toml:"backend_private_key_path"`
	// BackendCertificatePath is the file holding the public half of the
	// signing key, for agents to pin (env BACKEND_CERTIFICATE_PATH): the
	// scheduler writes it when absent and refuses to start when it holds
	// another key. "": not written.
	BackendCertificatePath string `toml:"backend_certificate_path"`
	// PreviousSigningKeyPath is the previous command signing key (public or
	// private PEM) during a rotation: announced and accepted, no longer used to
	// sign (env BACKEND_PREVIOUS_KEY_PATH).
	PreviousSigningKeyPath string `toml:"previous_signing_key_path"`
	// RateLimitRequests is the number of requests the API allows per client IP
	// and per principal per window, in bursts of up to that many (env
	// RATE_LIMIT_REQUESTS).
	RateLimitRequests int `toml:"rate_limit_requests"`
	// RateLimitWindow is the rate-limit window, in seconds (env RATE_LIMIT_WINDOW).
	RateLimitWindow int `toml:"rate_limit_window"`
	// TrustedProxies lists the CIDRs (or addresses) of reverse proxies whose
	// X-Forwarded-For the API believes for the client IP; default none.
	TrustedProxies []string `toml:"trusted_proxies"`
	// JWTIssuer is the required "iss" claim of API tokens.
	JWTIssuer string `toml:"jwt_issuer"`
	// JWTAudience is the required "aud" claim of API tokens.
	JWTAudience string `toml:"jwt_audience"`
	// AgentEnrollmentSecret is a bootstrap enrollment secret accepted by the gateway;
	// empty disables it (env AGENT_ENROLLMENT_SECRET). Secret.
	AgentEnrollmentSecret string `toml:"agent_enrollment_secret"`
	// AuditKey is the HMAC key of the audit chain, at least MinAuditKeyLen
	// bytes; every role that writes audit events needs it (env AUDIT_HMAC_KEY). Secret.
	AuditKey string `toml:"audit_key"`
	// PreviousAuditKeys are audit keys older rows are chained under, kept after
	// a rotation so verification still accepts them (env
	// AUDIT_HMAC_PREVIOUS_KEYS, comma-separated). Secret.
	PreviousAuditKeys []string `toml:"previous_audit_keys"`
	// ArgsEncryptionKey encrypts the secret values of command args at rest:
	// 32 bytes as 64 hex digits or base64 (env ARGS_ENCRYPTION_KEY). The API
	// server (sealing) and the scheduler (opening) need it; required outside
	// dev mode by both. Secret.
	ArgsEncryptionKey string `toml:"args_encryption_key"`
	// ArgsPreviousKeys are earlier args encryption keys during a rotation:
	// they still open what they sealed, never seal. Secret.
	ArgsPreviousKeys []string `toml:"args_previous_keys"`
}

// Alerts is the [alerts] section: webhook delivery.
type Alerts struct {
	// WebhookAllowedCIDRs lists the non-public networks (CIDRs or addresses)
	// webhooks may still reach, such as a receiver on the private network;
	// default none: only public unicast addresses.
	WebhookAllowedCIDRs []string `toml:"webhook_allowed_cidrs"`
	// WebhookStoreResponseBody keeps the first 512 bytes of a receiver's answer
	// in the delivery log; default off: only the status code and length.
	WebhookStoreResponseBody bool `toml:"webhook_store_response_body"`
}

// AgentManagement is the [agent_management] section: agent connections.
type AgentManagement struct {
	// MaxAgentConnections is the maximum number of agents connected to one gateway (env MAX_AGENT_CONNECTIONS).
	MaxAgentConnections int `toml:"max_agent_connections"`
	// HeartbeatInterval is the interval between agent heartbeats, in seconds (env AGENT_HEARTBEAT_INTERVAL).
	HeartbeatInterval int `toml:"heartbeat_interval"`
	// ConnectionTimeout is the agent connection timeout, in seconds.
	ConnectionTimeout int `toml:"connection_timeout"`
	// MaxReconnectAttempts is how many reconnects an agent makes with a
	// doubling delay, advertised in WELCOME; after them it keeps retrying at
	// the longest delay (an agent never gives up). 0: every retry waits
	// reconnect_backoff_ms.
	MaxReconnectAttempts int `toml:"max_reconnect_attempts"`
	// ReconnectBackoffMs is an agent's first reconnect delay, in
	// milliseconds, advertised in WELCOME.
	ReconnectBackoffMs int `toml:"reconnect_backoff_ms"`
	// DrainSeconds is the window over which a stopping gateway closes its
	// sessions, so agents reconnect elsewhere without a stampede (env AGENT_DRAIN_SECONDS).
	DrainSeconds int `toml:"drain_seconds"`
	// HelloTimeoutSeconds is how long a new WebSocket may take to send a valid
	// HELLO before it is closed with 1008 (env AGENT_HELLO_TIMEOUT).
	HelloTimeoutSeconds int `toml:"hello_timeout_seconds"`
	// MaxFramesPerSecond is each agent's sustained frame rate; bursts of twice
	// that are allowed, beyond it the gateway reads the agent's frames no faster.
	MaxFramesPerSecond int `toml:"max_frames_per_second"`
	// TLSCertPath and TLSKeyPath make the gateway serve TLS (env
	// GATEWAY_TLS_CERT, GATEWAY_TLS_KEY); with ClientCAPath (env
	// GATEWAY_CLIENT_CA) it also verifies agents' client certificates and takes
	// the agent id from them (mTLS).
	TLSCertPath  string `toml:"tls_cert_path"`
	TLSKeyPath   string `toml:"tls_key_path"`
	ClientCAPath string `toml:"client_ca_path"`
	// TrustReportedAttributes takes the site and labels an agent claims in
	// HELLO as the ones selectors match, when neither its enrollment secret
	// nor an admin fixed them (env AGENT_TRUST_REPORTED_ATTRIBUTES). Unsafe:
	// anyone who can enroll an agent can then claim any site and receive the
	// commands meant for it. Default false: claims are only reported.
	TrustReportedAttributes bool `toml:"trust_reported_attributes"`
	// BootstrapMaxAgents caps the agent identities the bootstrap enrollment
	// secret creates, across every gateway (env AGENT_ENROLLMENT_MAX_AGENTS);
	// 0 (the default) is unlimited. Production installs issue scoped secrets
	// through the API instead.
	BootstrapMaxAgents int `toml:"bootstrap_max_agents"`
}

// Command is the [command] section: command dispatch and retries.
type Command struct {
	// MaxConcurrentCommands is the maximum number of commands in flight (env MAX_CONCURRENT_COMMANDS).
	MaxConcurrentCommands int `toml:"max_concurrent_commands"`
	// CommandTimeout is the default command timeout, in seconds (env COMMAND_TIMEOUT).
	CommandTimeout int `toml:"command_timeout"`
	// MaxCommandQueueSize bounds the executions waiting to be dispatched, across
	// all commands; beyond it POST /commands answers 429.
	MaxCommandQueueSize int `toml:"max_command_queue_size"`
	// MaxPerAgent is the number of executions one agent may have in flight.
	MaxPerAgent int `toml:"max_per_agent"`
	// DispatchBatchSize is how many executions a scheduler claims, signs and
	// publishes per round.
	DispatchBatchSize int `toml:"dispatch_batch_size"`
	// HistoryRetentionDays is how long finished commands are kept, in days.
	HistoryRetentionDays int `toml:"history_retention_days"`
	// RetryAttempts is the default number of retries of a failed command (0 = none).
	RetryAttempts int `toml:"retry_attempts"`
	// RetryDelayMs is the base retry delay, in milliseconds.
	RetryDelayMs int `toml:"retry_delay_ms"`
}

// Telemetry is the [telemetry] section: agent telemetry ingest and retention.
type Telemetry struct {
	// CollectionInterval is the interval at which agents report telemetry, in seconds.
	CollectionInterval int `toml:"collection_interval"`
	// RetentionDays is how long telemetry is kept, in days.
	RetentionDays int `toml:"retention_days"`
	// BatchSize is the number of telemetry rows written per batch.
	BatchSize int `toml:"batch_size"`
	// FlushInterval is the maximum time a partial batch waits, in seconds.
	FlushInterval int `toml:"flush_interval"`
}

// Logging is the [logging] section.
type Logging struct {
	// Level is one of trace, debug, info, warn, warning, error (env LOG_LEVEL, alias RUST_LOG).
	Level string `toml:"level"`
	// Format is json or text (env LOG_FORMAT).
	Format string `toml:"format"`
	// Output is stdout, stderr or a file path (appended to).
	Output string `toml:"output"`
	// MaxFileSize is the size at which a log file is rotated, in bytes (0 = never).
	MaxFileSize int64 `toml:"max_file_size"`
	// MaxFiles is the number of rotated log files kept (0 = unlimited).
	MaxFiles int `toml:"max_files"`
}

// Defaults of the token and event-stream bounds.
const (
	DefaultMaxTokenLifetime            = 86400 // seconds
	DefaultMaxEventStreamsPerPrincipal = 4
)

// Defaults the roles' own Configs share with Default: a role given a zero
// value takes the same number as a binary started without configuration.
const (
	DefaultMaxAgentConnections       = 100
	DefaultHeartbeatIntervalSeconds  = 30
	DefaultConnectionTimeoutSeconds  = 60
	DefaultMaxFramesPerSecond        = 50
	DefaultCommandTimeoutSeconds     = 60
	DefaultDispatchBatchSize         = 100
	DefaultRetryDelayMs              = 1000
	DefaultCollectionIntervalSeconds = 30
	DefaultTelemetryBatchSize        = 100
	DefaultFlushIntervalSeconds      = 5
	DefaultWorkers                   = 4
	DefaultMaxConnections            = 1000
	DefaultRequestTimeoutSeconds     = 30
	DefaultMaxReconnectAttempts      = 5
	DefaultReconnectBackoffMs        = 1000
)

// DevAuditKey is the default audit key: a placeholder, long enough to run in
// dev mode, that Validate refuses outside it.
const DevAuditKey = "change-me-in-production-audit-hmac-key"

// Default returns the seed's defaults. A binary typically changes Server.Port before
// passing the result to Flags.Load.
//
// The default JWT secret is the seed's placeholder, which Validate refuses outside dev
// mode: production deployments must set JWT_SECRET.
func Default() Config {
	return Config{
		Server: Server{
			BindAddress:                 "0.0.0.0",
			Port:                        8080,
			Workers:                     DefaultWorkers,
			MaxConnections:              DefaultMaxConnections,
			RequestTimeout:              DefaultRequestTimeoutSeconds,
			MaxEventStreamsPerPrincipal: DefaultMaxEventStreamsPerPrincipal,
			ShutdownTimeout:             15,
		},
		Database: Database{ //nolint:gosec // G101: the documented default URL of a local install
			URL:            "postgresql://viworks:viworks@localhost/viworks",
			MaxConnections: 10,
			MinConnections: 2,
			ConnectTimeout: 10,
			IdleTimeout:    300,
			MaxLifetime:    3600,
		},
		Redis: Redis{
			URL:               "redis://localhost:6379",
			PoolSize:          10,
			ConnectionTimeout: 5,
			ReadTimeout:       3,
			WriteTimeout:      3,
			KeyPrefix:         "viworks:",
		},
		Security: Security{
			JWTSecret:              "change-me-in-production",
			AuditKey:               DevAuditKey,
			JWTExpiration:          3600,
			MaxTokenLifetime:       DefaultMaxTokenLifetime,
			BackendPrivateKeyPath:  "/etc/viworks/backend.key",
			BackendCertificatePath: "/etc/viworks/backend.crt",
			RateLimitRequests:      100,
			RateLimitWindow:        60,
			JWTIssuer:              "viworks",
			JWTAudience:            "viworks-api",
		},
		AgentManagement: AgentManagement{
			MaxAgentConnections:  DefaultMaxAgentConnections,
			HeartbeatInterval:    DefaultHeartbeatIntervalSeconds,
			ConnectionTimeout:    DefaultConnectionTimeoutSeconds,
			MaxReconnectAttempts: DefaultMaxReconnectAttempts,
			ReconnectBackoffMs:   DefaultReconnectBackoffMs,
			DrainSeconds:         10,
			HelloTimeoutSeconds:  DefaultHelloTimeoutSeconds,
			MaxFramesPerSecond:   DefaultMaxFramesPerSecond,
		},
		Command: Command{
			MaxConcurrentCommands: 50,
			CommandTimeout:        DefaultCommandTimeoutSeconds,
			MaxCommandQueueSize:   1000,
			MaxPerAgent:           16,
			DispatchBatchSize:     DefaultDispatchBatchSize,
			HistoryRetentionDays:  90,
			RetryAttempts:         3,
			RetryDelayMs:          DefaultRetryDelayMs,
		},
		Telemetry: Telemetry{
			CollectionInterval: DefaultCollectionIntervalSeconds,
			RetentionDays:      30,
			BatchSize:          DefaultTelemetryBatchSize,
			FlushInterval:      DefaultFlushIntervalSeconds,
		},
		Logging: Logging{
			Level:       "info",
			Format:      "json",
			Output:      "stdout",
			MaxFileSize: 104857600,
			MaxFiles:    10,
		},
	}
}

// clone returns a deep copy (the slices are not shared with c).
func (c Config) clone() Config {
	c.Security.TrustedProxies = cloneStrings(c.Security.TrustedProxies)
	c.Security.ArgsPreviousKeys = cloneStrings(c.Security.ArgsPreviousKeys)
	c.Alerts.WebhookAllowedCIDRs = cloneStrings(c.Alerts.WebhookAllowedCIDRs)
	c.Security.PreviousAuditKeys = cloneStrings(c.Security.PreviousAuditKeys)
	return c
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append(make([]string, 0, len(s)), s...)
}

// ListenAddr is the server's listen address, net.JoinHostPort(bind_address, port).
func (c Config) ListenAddr() string {
	return net.JoinHostPort(c.Server.BindAddress, strconv.Itoa(c.Server.Port))
}

func seconds(n int) time.Duration      { return time.Duration(n) * time.Second }
func milliseconds(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// RequestTimeout is server.request_timeout.
func (c Config) RequestTimeout() time.Duration { return seconds(c.Server.RequestTimeout) }

// ShutdownTimeout is server.shutdown_timeout.
func (c Config) ShutdownTimeout() time.Duration { return seconds(c.Server.ShutdownTimeout) }

// DatabaseConnectTimeout is database.connect_timeout.
func (c Config) DatabaseConnectTimeout() time.Duration { return seconds(c.Database.ConnectTimeout) }

// DatabaseIdleTimeout is database.idle_timeout.
func (c Config) DatabaseIdleTimeout() time.Duration { return seconds(c.Database.IdleTimeout) }

// DatabaseMaxLifetime is database.max_lifetime.
func (c Config) DatabaseMaxLifetime() time.Duration { return seconds(c.Database.MaxLifetime) }

// RedisConnectionTimeout is redis.connection_timeout.
func (c Config) RedisConnectionTimeout() time.Duration { return seconds(c.Redis.ConnectionTimeout) }

// RedisReadTimeout is redis.read_timeout.
func (c Config) RedisReadTimeout() time.Duration { return seconds(c.Redis.ReadTimeout) }

// RedisWriteTimeout is redis.write_timeout.
func (c Config) RedisWriteTimeout() time.Duration { return seconds(c.Redis.WriteTimeout) }

// JWTExpiration is security.jwt_expiration.
func (c Config) JWTExpiration() time.Duration { return seconds(c.Security.JWTExpiration) }

// MaxTokenLifetime is security.max_token_lifetime.
func (c Config) MaxTokenLifetime() time.Duration { return seconds(c.Security.MaxTokenLifetime) }

// RateLimitWindow is security.rate_limit_window.
func (c Config) RateLimitWindow() time.Duration { return seconds(c.Security.RateLimitWindow) }

// HeartbeatInterval is agent_management.heartbeat_interval.
func (c Config) HeartbeatInterval() time.Duration {
	return seconds(c.AgentManagement.HeartbeatInterval)
}

// ConnectionTimeout is agent_management.connection_timeout (for Redis's, see
// RedisConnectionTimeout).
func (c Config) ConnectionTimeout() time.Duration {
	return seconds(c.AgentManagement.ConnectionTimeout)
}

// ReconnectBackoff is agent_management.reconnect_backoff_ms.
func (c Config) ReconnectBackoff() time.Duration {
	return milliseconds(c.AgentManagement.ReconnectBackoffMs)
}

// DefaultHelloTimeoutSeconds is agent_management.hello_timeout_seconds' default.
const DefaultHelloTimeoutSeconds = 10

// HelloTimeout is agent_management.hello_timeout_seconds.
func (c Config) HelloTimeout() time.Duration { return seconds(c.AgentManagement.HelloTimeoutSeconds) }

// DrainWindow is agent_management.drain_seconds.
func (c Config) DrainWindow() time.Duration { return seconds(c.AgentManagement.DrainSeconds) }

// CommandRetention is how long finished commands are kept.
func (c Config) CommandRetention() time.Duration {
	return time.Duration(c.Command.HistoryRetentionDays) * 24 * time.Hour
}

// How many heartbeats an online agent may miss: past StaleHeartbeats the API
// reports it "stale" (still connected, silent), past OfflineHeartbeats the
// scheduler marks it offline. Each threshold adds one flush interval, since
// the gateways write last_seen once per flush.
const (
	StaleHeartbeats   = 2
	OfflineHeartbeats = 3
)

// SilentFor is the silence of n heartbeats plus one flush interval: the one
// rule behind StaleAfter and OfflineAfter.
func SilentFor(n int, heartbeat, flush time.Duration) time.Duration {
	return time.Duration(n)*heartbeat + flush
}

// StaleAfter is how long an online agent may go unseen before the API reports
// it stale.
func (c Config) StaleAfter() time.Duration {
	return SilentFor(StaleHeartbeats, c.HeartbeatInterval(), c.FlushInterval())
}

// OfflineAfter is how long an online agent may go unseen before the
// scheduler marks it offline.
func (c Config) OfflineAfter() time.Duration {
	return SilentFor(OfflineHeartbeats, c.HeartbeatInterval(), c.FlushInterval())
}

// CommandTimeout is command.command_timeout.
func (c Config) CommandTimeout() time.Duration { return seconds(c.Command.CommandTimeout) }

// RetryDelay is command.retry_delay_ms.
func (c Config) RetryDelay() time.Duration { return milliseconds(c.Command.RetryDelayMs) }

// CollectionInterval is telemetry.collection_interval.
func (c Config) CollectionInterval() time.Duration {
	return seconds(c.Telemetry.CollectionInterval)
}

// FlushInterval is telemetry.flush_interval.
func (c Config) FlushInterval() time.Duration { return seconds(c.Telemetry.FlushInterval) }

// Retention is telemetry.retention_days.
func (c Config) Retention() time.Duration {
	return time.Duration(c.Telemetry.RetentionDays) * 24 * time.Hour
}
