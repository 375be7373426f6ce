package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/egress"
)

// Minimum secret lengths outside dev mode, in bytes.
const (
	MinJWTSecretLen        = 32
	MinEnrollmentSecretLen = 16
	MinAuditKeyLen         = 32 // store.MinAuditKeyLen
)

// MaxTokenLifetimeLimit is the highest security.max_token_lifetime accepted:
// 30 days, in seconds.
const MaxTokenLifetimeLimit = 30 * 86400

// placeholders are well-known example secrets that are refused outside dev mode.
var placeholders = []string{
	"change-me-in-production",
	DevAuditKey,
	"your-super-secret-jwt-key-here",
	"changeme",
	"secret",
}

// IsPlaceholder reports whether s is one of the well-known example secrets.
func IsPlaceholder(s string) bool {
	s = strings.TrimSpace(s)
	for _, p := range placeholders {
		if strings.EqualFold(s, p) {
			return true
		}
	}
	return false
}

var instanceIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Validate checks c and returns nil or an errors.Join of one single-line error per
// problem, each naming the TOML key (and its environment variable, if it has one).
// Messages never contain secret values.
func (c Config) Validate() error {
	v := &validator{}

	s := c.Server
	v.between("server.port", s.Port, 1, 65535)
	v.atLeast("server.workers", s.Workers, 0) // 0: DefaultWorkers
	v.atLeast("server.max_connections", s.MaxConnections, 1)
	v.positive("server.request_timeout", s.RequestTimeout)
	v.positive("server.shutdown_timeout", s.ShutdownTimeout)
	v.between("server.max_event_streams_per_principal", s.MaxEventStreamsPerPrincipal, 1, 1000)
	if s.InstanceID != "" && !instanceIDRe.MatchString(s.InstanceID) {
		v.addf("%s must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'", name("server.instance_id"))
	}

	d := c.Database
	if d.URL == "" {
		v.addf("%s is required", name("database.url"))
	} else if msg := checkPostgresURL(d.URL); msg != "" {
		v.addf("%s %s", name("database.url"), msg)
	}
	v.atLeast("database.max_connections", d.MaxConnections, 1)
	v.atLeast("database.min_connections", d.MinConnections, 0)
	if d.MinConnections > d.MaxConnections && d.MaxConnections >= 1 {
		v.addf("%s must not exceed database.max_connections (%d > %d)", name("database.min_connections"), d.MinConnections, d.MaxConnections)
	}
	v.positive("database.connect_timeout", d.ConnectTimeout)
	v.positive("database.idle_timeout", d.IdleTimeout)
	v.positive("database.max_lifetime", d.MaxLifetime)

	r := c.Redis
	if r.URL == "" {
		v.addf("%s is required", name("redis.url"))
	} else if msg := checkRedisURL(r.URL); msg != "" {
		v.addf("%s %s", name("redis.url"), msg)
	}
	v.atLeast("redis.pool_size", r.PoolSize, 1)
	v.positive("redis.connection_timeout", r.ConnectionTimeout)
	v.positive("redis.read_timeout", r.ReadTimeout)
	v.positive("redis.write_timeout", r.WriteTimeout)

	sec := c.Security
	v.positive("security.jwt_expiration", sec.JWTExpiration)
	v.between("security.max_token_lifetime", sec.MaxTokenLifetime, 60, MaxTokenLifetimeLimit)
	if sec.JWTExpiration > sec.MaxTokenLifetime && sec.MaxTokenLifetime > 0 {
		v.addf("%s must not exceed security.max_token_lifetime (%d > %d)", name("security.jwt_expiration"), sec.JWTExpiration, sec.MaxTokenLifetime)
	}
	v.atLeast("security.rate_limit_requests", sec.RateLimitRequests, 1)
	v.positive("security.rate_limit_window", sec.RateLimitWindow)
	for _, p := range sec.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil && net.ParseIP(p) == nil {
			v.addf("%s: %q is not a CIDR or an IP address", name("security.trusted_proxies"), p)
		}
	}
	ak := name("security.audit_key")
	switch {
	case sec.AuditKey == "":
		v.addf("%s is not set; set a random key of at least %d bytes", ak, MinAuditKeyLen)
	case len(sec.AuditKey) < MinAuditKeyLen:
		v.addf("%s is too short; set a random key of at least %d bytes", ak, MinAuditKeyLen)
	case !s.DevMode && IsPlaceholder(sec.AuditKey):
		v.addf("%s is a placeholder; set a random key of at least %d bytes (or enable dev mode)", ak, MinAuditKeyLen)
	case !s.DevMode && sec.AuditKey == sec.JWTSecret:
		v.addf("%s must differ from %s", ak, name("security.jwt_secret"))
	}
	for i, k := range sec.PreviousAuditKeys {
		if len(k) < MinAuditKeyLen {
			v.addf("%s: key %d is shorter than %d bytes", name("security.previous_audit_keys"), i+1, MinAuditKeyLen)
		}
	}
	if strings.TrimSpace(sec.JWTIssuer) == "" {
		v.addf("%s is required", name("security.jwt_issuer"))
	}
	if strings.TrimSpace(sec.JWTAudience) == "" {
		v.addf("%s is required", name("security.jwt_audience"))
	}
	if !s.DevMode {
		jwt := name("security.jwt_secret")
		switch {
		case sec.JWTSecret == "":
			v.addf("%s is not set; set a random secret of at least %d bytes (or enable dev mode)", jwt, MinJWTSecretLen)
		case IsPlaceholder(sec.JWTSecret):
			v.addf("%s is a placeholder; set a random secret of at least %d bytes (or enable dev mode)", jwt, MinJWTSecretLen)
		case len(sec.JWTSecret) < MinJWTSecretLen:
			v.addf("%s is too short; set a random secret of at least %d bytes (or enable dev mode)", jwt, MinJWTSecretLen)
		}
		enr := name("security.agent_enrollment_secret")
		switch {
		case sec.AgentEnrollmentSecret == "":
		case IsPlaceholder(sec.AgentEnrollmentSecret):
			v.addf("%s is a placeholder; set a random secret of at least %d bytes (or enable dev mode)", enr, MinEnrollmentSecretLen)
		case len(sec.AgentEnrollmentSecret) < MinEnrollmentSecretLen:
			v.addf("%s is too short; set a random secret of at least %d bytes (or enable dev mode)", enr, MinEnrollmentSecretLen)
		}
	}

	for i, k := range append([]string{sec.ArgsEncryptionKey}, sec.ArgsPreviousKeys...) {
		key := name("security.args_encryption_key")
		if i > 0 {
			key = fmt.Sprintf("security.args_previous_keys[%d]", i-1)
		}
		switch {
		case k == "" && i == 0:
		case IsPlaceholder(k) && !s.DevMode:
			v.addf("%s is a placeholder; set 32 random bytes as hex or base64 (or enable dev mode)", key)
		default:
			if _, err := argseal.ParseKey(k); err != nil {
				v.addf("%s %s", key, err.Error())
			}
		}
	}
	for _, p := range c.Alerts.WebhookAllowedCIDRs {
		if _, err := egress.ParsePrefix(p); err != nil {
			v.addf("%s: %s", name("alerts.webhook_allowed_cidrs"), err.Error())
		}
	}

	a := c.AgentManagement
	v.atLeast("agent_management.max_agent_connections", a.MaxAgentConnections, 1)
	v.positive("agent_management.heartbeat_interval", a.HeartbeatInterval)
	v.positive("agent_management.connection_timeout", a.ConnectionTimeout)
	v.atLeast("agent_management.max_reconnect_attempts", a.MaxReconnectAttempts, 0)
	v.positive("agent_management.reconnect_backoff_ms", a.ReconnectBackoffMs)
	v.atLeast("agent_management.drain_seconds", a.DrainSeconds, 0)
	v.positive("agent_management.hello_timeout_seconds", a.HelloTimeoutSeconds)
	v.atLeast("agent_management.max_frames_per_second", a.MaxFramesPerSecond, 1)
	v.atLeast("agent_management.bootstrap_max_agents", a.BootstrapMaxAgents, 0)
	if (a.TLSCertPath == "") != (a.TLSKeyPath == "") {
		v.addf("agent_management.tls_cert_path and tls_key_path (GATEWAY_TLS_CERT, GATEWAY_TLS_KEY) must be set together")
	}
	if a.ClientCAPath != "" && a.TLSCertPath == "" {
		v.addf("agent_management.client_ca_path (GATEWAY_CLIENT_CA) needs tls_cert_path and tls_key_path")
	}

	cmd := c.Command
	v.atLeast("command.max_concurrent_commands", cmd.MaxConcurrentCommands, 1)
	v.positive("command.command_timeout", cmd.CommandTimeout)
	v.atLeast("command.max_command_queue_size", cmd.MaxCommandQueueSize, 1)
	v.atLeast("command.max_per_agent", cmd.MaxPerAgent, 1)
	v.between("command.dispatch_batch_size", cmd.DispatchBatchSize, 1, 5000)
	v.atLeast("command.history_retention_days", cmd.HistoryRetentionDays, 1)
	v.atLeast("command.retry_attempts", cmd.RetryAttempts, 0)
	v.positive("command.retry_delay_ms", cmd.RetryDelayMs)

	t := c.Telemetry
	v.positive("telemetry.collection_interval", t.CollectionInterval)
	v.atLeast("telemetry.retention_days", t.RetentionDays, 1)
	v.atLeast("telemetry.batch_size", t.BatchSize, 1)
	v.positive("telemetry.flush_interval", t.FlushInterval)

	l := c.Logging
	switch strings.ToLower(l.Level) {
	case "trace", "debug", "info", "warn", "warning", "error":
	default:
		v.addf("%s must be one of trace, debug, info, warn, warning, error (got %q)", name("logging.level"), l.Level)
	}
	switch strings.ToLower(l.Format) {
	case "json", "text":
	default:
		v.addf("%s must be json or text (got %q)", name("logging.format"), l.Format)
	}
	switch {
	case l.Output == "stdout" || l.Output == "stderr":
	case strings.TrimSpace(l.Output) == "":
		v.addf("%s must be stdout, stderr or a file path", name("logging.output"))
	case strings.ContainsRune(l.Output, 0) || strings.HasSuffix(l.Output, "/"):
		v.addf("%s is not a valid file path (got %q)", name("logging.output"), l.Output)
	}
	if l.MaxFileSize < 0 {
		v.addf("%s must be at least 0 (got %d)", name("logging.max_file_size"), l.MaxFileSize)
	}
	v.atLeast("logging.max_files", l.MaxFiles, 0)

	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) addf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validator) between(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.addf("%s must be between %d and %d (got %d)", name(key), lo, hi, n)
	}
}

func (v *validator) atLeast(key string, n, lo int) {
	if n < lo {
		v.addf("%s must be at least %d (got %d)", name(key), lo, n)
	}
}

func (v *validator) positive(key string, n int) {
	if n <= 0 {
		v.addf("%s must be greater than 0 (got %d)", name(key), n)
	}
}

// name is the key as shown in messages: "server.port (BACKEND_AGENT_PORT)".
func name(key string) string {
	if env, ok := envOf[key]; ok {
		return key + " (" + env + ")"
	}
	return key
}

// checkPostgresURL returns "" when s is a postgres URL or key=value DSN, else the end
// of an error message. The message never quotes s, which may hold a password.
func checkPostgresURL(s string) string {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "is not a valid URL"
		}
		switch strings.ToLower(u.Scheme) {
		case "postgres", "postgresql":
			return ""
		}
		return "must be a postgres:// or postgresql:// URL or a key=value DSN"
	}
	if pairs, err := parseDSN(s); err != nil || len(pairs) == 0 {
		return "must be a postgres:// or postgresql:// URL or a key=value DSN"
	}
	return ""
}

// checkRedisURL returns "" when s is a valid redis:// or rediss:// URL, else the end
// of an error message that never quotes s.
func checkRedisURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "is not a valid URL"
	}
	switch strings.ToLower(u.Scheme) {
	case "redis", "rediss":
	default:
		return "must be a redis:// or rediss:// URL"
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return "must name the database as a number (redis://host:port/N)"
		}
	}
	return ""
}
