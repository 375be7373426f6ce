package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Flags holds the command-line flags shared by the service binaries. Create it with
// AddFlags; after the FlagSet is parsed, Load applies the flags that were set.
type Flags struct {
	// ConfigPath is --config: the TOML file to read (none when empty).
	ConfigPath string
	// BindAddress is --bind-address (server.bind_address).
	BindAddress string
	// Port is --port (server.port).
	Port int
	// LogLevel is --log-level (logging.level).
	LogLevel string
	// LogFormat is --log-format (logging.format).
	LogFormat string
	// Dev is --dev (server.dev_mode).
	Dev bool

	fs *flag.FlagSet
}

// DevBindAddress is where dev mode listens unless server.bind_address is set
// explicitly (file, BACKEND_AGENT_BIND_ADDRESS or --bind-address).
const DevBindAddress = "127.0.0.1"

// AddFlags registers --config, --bind-address, --port, --log-level, --log-format and
// --dev on fs and returns the Flags that Load reads after fs is parsed.
func AddFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.StringVar(&f.ConfigPath, "config", "", "path of a TOML configuration file")
	fs.StringVar(&f.BindAddress, "bind-address", "", "address to listen on (overrides BACKEND_AGENT_BIND_ADDRESS)")
	fs.IntVar(&f.Port, "port", 0, "port to listen on (overrides BACKEND_AGENT_PORT)")
	fs.StringVar(&f.LogLevel, "log-level", "", "log level: trace, debug, info, warn, error (overrides LOG_LEVEL)")
	fs.StringVar(&f.LogFormat, "log-format", "", "log format: json or text (overrides LOG_FORMAT)")
	fs.BoolVar(&f.Dev, "dev", false, "dev mode: allow placeholder secrets (overrides VIWORKS_DEV_MODE)")
	return f
}

// Load starts from base (a binary passes Default() with its own port), applies the
// TOML file named by --config (if any), then the environment read through getenv
// (os.Getenv when nil; an empty value counts as unset), then the flags that were set
// explicitly on the command line, and finally calls Validate. Unknown TOML keys and
// malformed environment values are errors naming the key or variable. A nil *Flags,
// or one not made by AddFlags, applies no flags (only ConfigPath is honoured).
// In dev mode the bind address becomes DevBindAddress unless one of those
// sources set it.
//
// On error the returned Config is the zero value.
func (f *Flags) Load(base Config, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := base.clone()
	explicitBind := false // server.bind_address set by the file, environment or a flag
	if f != nil && f.ConfigPath != "" {
		setsBind, err := decodeFile(f.ConfigPath, &cfg)
		if err != nil {
			return Config{}, err
		}
		explicitBind = setsBind
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return Config{}, err
	}
	explicitBind = explicitBind || getenv("BACKEND_AGENT_BIND_ADDRESS") != ""
	if f != nil && f.apply(&cfg) {
		explicitBind = true
	}
	if cfg.Server.DevMode && !explicitBind {
		// Dev mode accepts weak secrets: keep it off the network unless asked.
		cfg.Server.BindAddress = DevBindAddress
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// apply copies the flags that were set on the command line into cfg; it
// reports whether --bind-address was one of them.
func (f *Flags) apply(cfg *Config) (bindSet bool) {
	if f.fs == nil {
		return false
	}
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "bind-address":
			cfg.Server.BindAddress = f.BindAddress
			bindSet = true
		case "port":
			cfg.Server.Port = f.Port
		case "log-level":
			cfg.Logging.Level = f.LogLevel
		case "log-format":
			cfg.Logging.Format = f.LogFormat
		case "dev":
			cfg.Server.DevMode = f.Dev
		}
	})
	return bindSet
}

// removedKeys are keys the product no longer reads, with why: a file that
// still sets one is refused with this explanation rather than "unknown key".
var removedKeys = map[string]string{
	"server.cors_origins":      "was removed: the API sends no CORS headers (browsers cannot call it cross-origin); delete the key, and put a reverse proxy in front if a browser console needs it",
	"security.allowed_origins": "was removed: the API sends no CORS headers (browsers cannot call it cross-origin); delete the key, and put a reverse proxy in front if a browser console needs it",
}

// decodeFile overlays the TOML file at path onto cfg; it reports whether the
// file sets server.bind_address.
func decodeFile(path string, cfg *Config) (setsBind bool, err error) {
	md, err := toml.DecodeFile(path, cfg)
	if err != nil {
		return false, fmt.Errorf("config file %s: %w", path, err)
	}
	var errs []error
	for _, k := range md.Undecoded() {
		if why, ok := removedKeys[k.String()]; ok {
			errs = append(errs, fmt.Errorf("config file %s: %s %s", path, k.String(), why))
			continue
		}
		errs = append(errs, fmt.Errorf("config file %s: unknown key %q", path, k.String()))
	}
	return md.IsDefined("server", "bind_address"), errors.Join(errs...)
}

// binding ties an environment variable to the TOML key it overrides.
type binding struct {
	env   string
	key   string
	field func(*Config) any // *string, *int or *bool
}

// bindings lists the environment variables in the order they are applied.
var bindings = []binding{
	{"BACKEND_AGENT_BIND_ADDRESS", "server.bind_address", func(c *Config) any { return &c.Server.BindAddress }},
	{"BACKEND_AGENT_PORT", "server.port", func(c *Config) any { return &c.Server.Port }},
	{"BACKEND_AGENT_WORKERS", "server.workers", func(c *Config) any { return &c.Server.Workers }},
	{"VIWORKS_DEV_MODE", "server.dev_mode", func(c *Config) any { return &c.Server.DevMode }},
	{"VIWORKS_INSTANCE_ID", "server.instance_id", func(c *Config) any { return &c.Server.InstanceID }},
	{"VIWORKS_PPROF", "server.pprof", func(c *Config) any { return &c.Server.Pprof }},
	{"DATABASE_URL", "database.url", func(c *Config) any { return &c.Database.URL }},
	{"DATABASE_MAX_CONNECTIONS", "database.max_connections", func(c *Config) any { return &c.Database.MaxConnections }},
	{"REDIS_URL", "redis.url", func(c *Config) any { return &c.Redis.URL }},
	{"REDIS_POOL_SIZE", "redis.pool_size", func(c *Config) any { return &c.Redis.PoolSize }},
	{"REDIS_KEY_PREFIX", "redis.key_prefix", func(c *Config) any { return &c.Redis.KeyPrefix }},
	{"JWT_SECRET", "security.jwt_secret", func(c *Config) any { return &c.Security.JWTSecret }},
	{"JWT_EXPIRATION", "security.jwt_expiration", func(c *Config) any { return &c.Security.JWTExpiration }},
	{"MAX_TOKEN_LIFETIME", "security.max_token_lifetime", func(c *Config) any { return &c.Security.MaxTokenLifetime }},
	{"RATE_LIMIT_REQUESTS", "security.rate_limit_requests", func(c *Config) any { return &c.Security.RateLimitRequests }},
	{"RATE_LIMIT_WINDOW", "security.rate_limit_window", func(c *Config) any { return &c.Security.RateLimitWindow }},
	{"BACKEND_PRIVATE_KEY_PATH", "security.backend_private_key_path", func(c *Config) any { return &c.Security.BackendPrivateKeyPath }},
	{"BACKEND_CERTIFICATE_PATH", "security.backend_certificate_path", func(c *Config) any { return &c.Security.BackendCertificatePath }},
	{"BACKEND_PREVIOUS_KEY_PATH", "security.previous_signing_key_path", func(c *Config) any { return &c.Security.PreviousSigningKeyPath }},
	{"ARGS_ENCRYPTION_KEY", "security.args_encryption_key", func(c *Config) any { return &c.Security.ArgsEncryptionKey }},
	{"AGENT_ENROLLMENT_SECRET", "security.agent_enrollment_secret", func(c *Config) any { return &c.Security.AgentEnrollmentSecret }},
	{"AUDIT_HMAC_KEY", "security.audit_key", func(c *Config) any { return &c.Security.AuditKey }},
	{"AUDIT_HMAC_PREVIOUS_KEYS", "security.previous_audit_keys", func(c *Config) any { return &c.Security.PreviousAuditKeys }},
	{"MAX_AGENT_CONNECTIONS", "agent_management.max_agent_connections", func(c *Config) any { return &c.AgentManagement.MaxAgentConnections }},
	{"AGENT_ENROLLMENT_MAX_AGENTS", "agent_management.bootstrap_max_agents", func(c *Config) any { return &c.AgentManagement.BootstrapMaxAgents }},
	{"AGENT_HEARTBEAT_INTERVAL", "agent_management.heartbeat_interval", func(c *Config) any { return &c.AgentManagement.HeartbeatInterval }},
	{"AGENT_DRAIN_SECONDS", "agent_management.drain_seconds", func(c *Config) any { return &c.AgentManagement.DrainSeconds }},
	{"AGENT_HELLO_TIMEOUT", "agent_management.hello_timeout_seconds", func(c *Config) any { return &c.AgentManagement.HelloTimeoutSeconds }},
	{"GATEWAY_TLS_CERT", "agent_management.tls_cert_path", func(c *Config) any { return &c.AgentManagement.TLSCertPath }},
	{"GATEWAY_TLS_KEY", "agent_management.tls_key_path", func(c *Config) any { return &c.AgentManagement.TLSKeyPath }},
	{"GATEWAY_CLIENT_CA", "agent_management.client_ca_path", func(c *Config) any { return &c.AgentManagement.ClientCAPath }},
	{"AGENT_TRUST_REPORTED_ATTRIBUTES", "agent_management.trust_reported_attributes", func(c *Config) any { return &c.AgentManagement.TrustReportedAttributes }},
	{"MAX_CONCURRENT_COMMANDS", "command.max_concurrent_commands", func(c *Config) any { return &c.Command.MaxConcurrentCommands }},
	{"COMMAND_TIMEOUT", "command.command_timeout", func(c *Config) any { return &c.Command.CommandTimeout }},
	// RUST_LOG is the seed's name for the log level; LOG_LEVEL, applied after it, wins.
	{"RUST_LOG", "logging.level", func(c *Config) any { return &c.Logging.Level }},
	{"LOG_LEVEL", "logging.level", func(c *Config) any { return &c.Logging.Level }},
	{"LOG_FORMAT", "logging.format", func(c *Config) any { return &c.Logging.Format }},
}

// applyEnv overlays the environment variables that getenv reports as non-empty.
func applyEnv(cfg *Config, getenv func(string) string) error {
	var errs []error
	for _, b := range bindings {
		v := getenv(b.env)
		if v == "" {
			continue
		}
		if b.env == "RUST_LOG" {
			v = rustLogLevel(v)
		}
		switch p := b.field(cfg).(type) {
		case *string:
			*p = v
		case *int:
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("environment variable %s: %q is not an integer", b.env, v))
				continue
			}
			*p = n
		case *[]string:
			*p = nil
			for _, item := range strings.Split(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					*p = append(*p, item)
				}
			}
		case *bool:
			t, ok := parseBool(v)
			if !ok {
				errs = append(errs, fmt.Errorf("environment variable %s: %q is not a boolean (use 1/true or 0/false)", b.env, v))
				continue
			}
			*p = t
		default:
			panic("config: unsupported binding type for " + b.env)
		}
	}
	return errors.Join(errs...)
}

func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	return false, false
}

// rustLogLevel extracts a level from a RUST_LOG filter such as "info" or
// "warn,viworks=debug": the global directive if there is one, else the level of the
// first target directive. Anything else is returned as is, for Validate to reject.
func rustLogLevel(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, ",=") {
		return s
	}
	first := ""
	for _, d := range strings.Split(s, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if _, lvl, ok := strings.Cut(d, "="); ok {
			if first == "" {
				first = strings.TrimSpace(lvl)
			}
			continue
		}
		return d
	}
	if first != "" {
		return first
	}
	return s
}

// envOf maps a TOML key to its environment variable (the last binding wins, so
// logging.level maps to LOG_LEVEL).
var envOf = func() map[string]string {
	m := make(map[string]string, len(bindings))
	for _, b := range bindings {
		m[b.key] = b.env
	}
	return m
}()
