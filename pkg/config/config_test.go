package config_test

import (
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/config"
)

// seedTOML is the product's original example configuration file, verbatim:
// Default() keeps its values (TestDefaultsAreTheSeed).
const seedTOML = `
[server]
bind_address = "0.0.0.0"
port = 8080
workers = 4
max_connections = 1000
request_timeout = 30
cors_origins = ["*"]

[database]
url = "postgresql://viworks:viworks@localhost/viworks"
max_connections = 10
min_connections = 2
connect_timeout = 10
idle_timeout = 300
max_lifetime = 3600

[redis]
url = "redis://localhost:6379"
pool_size = 10
connection_timeout = 5
read_timeout = 3
write_timeout = 3

[security]
jwt_secret = "change-me-in-production"
jwt_expiration = 3600
backend_private_key_path = "/etc/viworks/backend.key"
backend_certificate_path = "/etc/viworks/backend.crt"
allowed_origins = ["*"]
rate_limit_requests = 100
rate_limit_window = 60

[agent_management]
max_agent_connections = 100
heartbeat_interval = 30
connection_timeout = 60
max_reconnect_attempts = 5
reconnect_backoff_ms = 1000

[command]
max_concurrent_commands = 50
command_timeout = 60
max_command_queue_size = 1000
retry_attempts = 3
retry_delay_ms = 1000

[telemetry]
collection_interval = 30
retention_days = 30
batch_size = 100
flush_interval = 5

[logging]
level = "info"
format = "json"
output = "stdout"
max_file_size = 104857600
max_files = 10
`

const (
	strongSecret   = "0123456789abcdef0123456789abcdef-strong"
	strongAuditKey = "fedcba9876543210fedcba9876543210-audit"
)

// env is a map-backed getenv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// valid is Default() with a production-grade secret, which passes Validate.
func valid() config.Config {
	c := config.Default()
	c.Security.JWTSecret = strongSecret
	c.Security.AuditKey = strongAuditKey
	return c
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

// load parses args on a fresh FlagSet and loads from base.
func load(t *testing.T, base config.Config, args []string, e env) (config.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f := config.AddFlags(fs)
	require.NoError(t, fs.Parse(args))
	return f.Load(base, e.get)
}

func TestDefaultsAreTheSeed(t *testing.T) {
	// Every key of the seed file maps to a field, and decoding the seed onto the
	// zero Config gives Default() except for the keys the seed does not have.
	var fromSeed config.Config
	md, err := toml.Decode(seedTOML, &fromSeed)
	require.NoError(t, err)
	// The seed's two CORS lists were never used and are removed (see TestRemovedKeys).
	require.ElementsMatch(t, []string{"server.cors_origins", "security.allowed_origins"}, func() (keys []string) {
		for _, k := range md.Undecoded() {
			keys = append(keys, k.String())
		}
		return keys
	}())

	fromSeed.Server.ShutdownTimeout = 15
	fromSeed.Redis.KeyPrefix = "viworks:"
	fromSeed.Security.JWTIssuer = "viworks"
	fromSeed.Security.JWTAudience = "viworks-api"
	fromSeed.Command.MaxPerAgent = 16
	fromSeed.Command.DispatchBatchSize = 100
	fromSeed.AgentManagement.DrainSeconds = 10
	fromSeed.AgentManagement.HelloTimeoutSeconds = config.DefaultHelloTimeoutSeconds
	fromSeed.AgentManagement.MaxFramesPerSecond = 50
	fromSeed.Command.HistoryRetentionDays = 90
	fromSeed.Server.MaxEventStreamsPerPrincipal = config.DefaultMaxEventStreamsPerPrincipal
	fromSeed.Security.MaxTokenLifetime = config.DefaultMaxTokenLifetime
	fromSeed.Security.AuditKey = config.DevAuditKey
	require.Equal(t, fromSeed, config.Default())

	d := config.Default()
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"server.port", d.Server.Port, 8080},
		{"server.bind_address", d.Server.BindAddress, "0.0.0.0"},
		{"server.dev_mode", d.Server.DevMode, false},
		{"server.instance_id", d.Server.InstanceID, ""},
		{"database.url", d.Database.URL, "postgresql://viworks:viworks@localhost/viworks"},
		{"redis.url", d.Redis.URL, "redis://localhost:6379"},
		{"security.jwt_secret", d.Security.JWTSecret, "change-me-in-production"},
		{"security.agent_enrollment_secret", d.Security.AgentEnrollmentSecret, ""},
		{"security.audit_key", d.Security.AuditKey, config.DevAuditKey},
		{"agent_management.heartbeat_interval", d.AgentManagement.HeartbeatInterval, 30},
		{"command.command_timeout", d.Command.CommandTimeout, 60},
		{"logging.level", d.Logging.Level, "info"},
		{"logging.max_file_size", d.Logging.MaxFileSize, int64(104857600)},
	} {
		require.Equal(t, tc.want, tc.got, tc.name)
	}

	// The seed's defaults are valid in dev mode (their secret is a placeholder).
	d = config.Default()
	d.Server.DevMode = true
	require.NoError(t, d.Validate())
	require.NoError(t, valid().Validate())
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
[server]
bind_address = "127.0.0.1"
port = 9000
workers = 8

[security]
jwt_secret = "`+strongSecret+`"
trusted_proxies = ["10.0.0.0/8"]
audit_key = "`+strongAuditKey+`"

[logging]
level = "debug"
format = "text"
`)
	base := config.Default()
	base.Server.Port = 7000 // a binary's own port

	for _, tc := range []struct {
		name     string
		args     []string
		env      env
		port     int
		bind     string
		level    string
		format   string
		workers  int
		devMode  bool
		instance string
	}{
		{name: "base only", args: nil, env: env{"JWT_SECRET": strongSecret, "AUDIT_HMAC_KEY": strongAuditKey},
			port: 7000, bind: "0.0.0.0", level: "info", format: "json", workers: 4},
		{name: "file over base", args: []string{"--config", file},
			port: 9000, bind: "127.0.0.1", level: "debug", format: "text", workers: 8},
		{name: "env over file", args: []string{"--config", file},
			env:  env{"BACKEND_AGENT_PORT": "9001", "LOG_LEVEL": "warn", "BACKEND_AGENT_WORKERS": "2", "VIWORKS_INSTANCE_ID": "gw-1"},
			port: 9001, bind: "127.0.0.1", level: "warn", format: "text", workers: 2, instance: "gw-1"},
		{name: "flags over env", args: []string{"--config", file, "--port", "9002", "--bind-address", "::1", "--log-level", "error", "--log-format", "json"},
			env:  env{"BACKEND_AGENT_PORT": "9001", "BACKEND_AGENT_BIND_ADDRESS": "10.0.0.1", "LOG_LEVEL": "warn", "LOG_FORMAT": "text"},
			port: 9002, bind: "::1", level: "error", format: "json", workers: 8},
		{name: "unset flags do not override", args: []string{"-config=" + file},
			env:  env{"BACKEND_AGENT_PORT": "9001"},
			port: 9001, bind: "127.0.0.1", level: "debug", format: "text", workers: 8},
		{name: "RUST_LOG alias", args: []string{"--config", file},
			env:  env{"RUST_LOG": "trace"},
			port: 9000, bind: "127.0.0.1", level: "trace", format: "text", workers: 8},
		{name: "RUST_LOG filter syntax", args: []string{"--config", file},
			env:  env{"RUST_LOG": "viworks=debug,warn"},
			port: 9000, bind: "127.0.0.1", level: "warn", format: "text", workers: 8},
		{name: "LOG_LEVEL wins over RUST_LOG", args: []string{"--config", file},
			env:  env{"RUST_LOG": "trace", "LOG_LEVEL": "error"},
			port: 9000, bind: "127.0.0.1", level: "error", format: "text", workers: 8},
		{name: "dev mode from env binds loopback", args: nil, env: env{"VIWORKS_DEV_MODE": "true", "JWT_SECRET": "secret"},
			port: 7000, bind: "127.0.0.1", level: "info", format: "json", workers: 4, devMode: true},
		{name: "dev mode with BACKEND_AGENT_BIND_ADDRESS", args: nil, env: env{"VIWORKS_DEV_MODE": "true", "BACKEND_AGENT_BIND_ADDRESS": "0.0.0.0"},
			port: 7000, bind: "0.0.0.0", level: "info", format: "json", workers: 4, devMode: true},
		{name: "dev mode with --bind-address", args: []string{"--dev", "--bind-address", "0.0.0.0"}, env: env{},
			port: 7000, bind: "0.0.0.0", level: "info", format: "json", workers: 4, devMode: true},
		{name: "--dev=false over env", args: []string{"--config", file, "--dev=false"}, env: env{"VIWORKS_DEV_MODE": "1"},
			port: 9000, bind: "127.0.0.1", level: "debug", format: "text", workers: 8, devMode: false},
		{name: "--dev over default binds loopback", args: []string{"--dev"}, env: env{},
			port: 7000, bind: "127.0.0.1", level: "info", format: "json", workers: 4, devMode: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, base, tc.args, tc.env)
			require.NoError(t, err)
			require.Equal(t, tc.port, c.Server.Port)
			require.Equal(t, tc.bind, c.Server.BindAddress)
			require.Equal(t, tc.level, c.Logging.Level)
			require.Equal(t, tc.format, c.Logging.Format)
			require.Equal(t, tc.workers, c.Server.Workers)
			require.Equal(t, tc.devMode, c.Server.DevMode)
			require.Equal(t, tc.instance, c.Server.InstanceID)
		})
	}
	// The file's slice did not leak into base.
	require.Empty(t, base.Security.TrustedProxies)
}

func TestEveryEnvVar(t *testing.T) {
	e := env{
		"BACKEND_AGENT_BIND_ADDRESS":      "127.0.0.2",
		"BACKEND_AGENT_PORT":              "1234",
		"BACKEND_AGENT_WORKERS":           "3",
		"DATABASE_URL":                    "postgres://u:p@db:5432/x",
		"DATABASE_MAX_CONNECTIONS":        "20",
		"REDIS_URL":                       "rediss://cache:6380/2",
		"REDIS_POOL_SIZE":                 "30",
		"REDIS_KEY_PREFIX":                "t1:",
		"JWT_SECRET":                      strongSecret,
		"JWT_EXPIRATION":                  "60",
		"BACKEND_PRIVATE_KEY_PATH":        "/k",
		"BACKEND_CERTIFICATE_PATH":        "/c",
		"AGENT_ENROLLMENT_SECRET":         "enroll-0123456789",
		"AUDIT_HMAC_KEY":                  strongAuditKey,
		"AUDIT_HMAC_PREVIOUS_KEYS":        " " + strongSecret + "-old1 ,," + strongSecret + "-old2",
		"ARGS_ENCRYPTION_KEY":             strings.Repeat("ab", 32),
		"MAX_AGENT_CONNECTIONS":           "5000",
		"AGENT_ENROLLMENT_MAX_AGENTS":     "200",
		"AGENT_HEARTBEAT_INTERVAL":        "7",
		"AGENT_TRUST_REPORTED_ATTRIBUTES": "true",
		"MAX_CONCURRENT_COMMANDS":         "9",
		"COMMAND_TIMEOUT":                 "11",
		"VIWORKS_DEV_MODE":                "0",
		"VIWORKS_INSTANCE_ID":             "gw-a.1_b",
		"LOG_LEVEL":                       "debug",
		"LOG_FORMAT":                      "text",
	}
	c, err := (&config.Flags{}).Load(config.Default(), e.get)
	require.NoError(t, err)

	want := config.Default()
	want.Server.BindAddress = "127.0.0.2"
	want.Server.Port = 1234
	want.Server.Workers = 3
	want.Server.InstanceID = "gw-a.1_b"
	want.Database.URL = "postgres://u:p@db:5432/x"
	want.Database.MaxConnections = 20
	want.Redis.URL = "rediss://cache:6380/2"
	want.Redis.PoolSize = 30
	want.Redis.KeyPrefix = "t1:"
	want.Security.JWTSecret = strongSecret
	want.Security.AuditKey = strongAuditKey
	want.Security.PreviousAuditKeys = []string{strongSecret + "-old1", strongSecret + "-old2"}
	want.Security.JWTExpiration = 60
	want.Security.BackendPrivateKeyPath = "/k"
	want.Security.BackendCertificatePath = "/c"
	want.Security.AgentEnrollmentSecret = "enroll-0123456789"
	want.Security.ArgsEncryptionKey = strings.Repeat("ab", 32)
	want.AgentManagement.MaxAgentConnections = 5000
	want.AgentManagement.BootstrapMaxAgents = 200
	want.AgentManagement.HeartbeatInterval = 7
	want.AgentManagement.TrustReportedAttributes = true
	want.Command.MaxConcurrentCommands = 9
	want.Command.CommandTimeout = 11
	want.Logging.Level = "debug"
	want.Logging.Format = "text"
	require.Equal(t, want, c)
}

func TestFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "[server]\nprot = 1\n", []string{`unknown key "server.prot"`}},
		{"unknown section", "[servers]\nport = 1\n", []string{`unknown key "servers"`}},
		{"two unknown keys", "[redis]\nurl = \"redis://x\"\nkeyprefix = \"a\"\n[logging]\nlvl = \"x\"\n",
			[]string{`"redis.keyprefix"`, `"logging.lvl"`}},
		{"wrong type", "[server]\nport = \"abc\"\n", []string{"server.port"}},
		{"syntax", "[server\n", []string{"config file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, valid(), []string{"--config", writeFile(t, tc.body)}, env{})
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}

	_, err := load(t, valid(), []string{"--config", filepath.Join(t.TempDir(), "missing.toml")}, env{})
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestBadEnvValue(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"BACKEND_AGENT_PORT", "abc"},
		{"BACKEND_AGENT_WORKERS", "4.5"},
		{"DATABASE_MAX_CONNECTIONS", "ten"},
		{"REDIS_POOL_SIZE", "x"},
		{"JWT_EXPIRATION", "1h"},
		{"MAX_AGENT_CONNECTIONS", "-"},
		{"AGENT_HEARTBEAT_INTERVAL", "30s"},
		{"MAX_CONCURRENT_COMMANDS", "many"},
		{"COMMAND_TIMEOUT", "1m"},
		{"VIWORKS_DEV_MODE", "maybe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (&config.Flags{}).Load(valid(), env{tc.name: tc.value}.get)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.name)
		})
	}
	// An out-of-range value parses but fails validation, naming key and variable.
	_, err := (&config.Flags{}).Load(valid(), env{"BACKEND_AGENT_PORT": "70000"}.get)
	require.ErrorContains(t, err, "server.port (BACKEND_AGENT_PORT) must be between 1 and 65535")
}

func TestValidateRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*config.Config)
		want   string // "" = valid
	}{
		{"port 0", func(c *config.Config) { c.Server.Port = 0 }, "server.port (BACKEND_AGENT_PORT)"},
		{"port 65536", func(c *config.Config) { c.Server.Port = 65536 }, "server.port"},
		{"port 65535", func(c *config.Config) { c.Server.Port = 65535 }, ""},
		{"workers", func(c *config.Config) { c.Server.Workers = -1 }, "server.workers"},
		{"server max connections", func(c *config.Config) { c.Server.MaxConnections = 0 }, "server.max_connections"},
		{"request timeout", func(c *config.Config) { c.Server.RequestTimeout = 0 }, "server.request_timeout"},
		{"shutdown timeout", func(c *config.Config) { c.Server.ShutdownTimeout = -1 }, "server.shutdown_timeout"},
		{"instance id ok", func(c *config.Config) { c.Server.InstanceID = "gw-0.a_B" }, ""},
		{"instance id chars", func(c *config.Config) { c.Server.InstanceID = "gw 0" }, "server.instance_id (VIWORKS_INSTANCE_ID)"},
		{"instance id length", func(c *config.Config) { c.Server.InstanceID = strings.Repeat("a", 65) }, "server.instance_id"},
		{"instance id 64", func(c *config.Config) { c.Server.InstanceID = strings.Repeat("a", 64) }, ""},
		{"database url missing", func(c *config.Config) { c.Database.URL = "" }, "database.url (DATABASE_URL) is required"},
		{"database url scheme", func(c *config.Config) { c.Database.URL = "mysql://u@h/db" }, "database.url"},
		{"database url garbage", func(c *config.Config) { c.Database.URL = "not a url" }, "database.url"},
		{"database url bad port", func(c *config.Config) { c.Database.URL = "postgres://h:port/db" }, "database.url"},
		{"database postgres url", func(c *config.Config) { c.Database.URL = "postgres://u:p@h:5432/db?sslmode=disable" }, ""},
		{"database dsn", func(c *config.Config) { c.Database.URL = "host=localhost user=u password='a b\\'c' dbname=x" }, ""},
		{"database dsn unterminated", func(c *config.Config) { c.Database.URL = "host=localhost password='abc" }, "database.url"},
		{"database max connections", func(c *config.Config) { c.Database.MaxConnections = 0 }, "database.max_connections (DATABASE_MAX_CONNECTIONS)"},
		{"database min connections", func(c *config.Config) { c.Database.MinConnections = -1 }, "database.min_connections"},
		{"database min > max", func(c *config.Config) { c.Database.MinConnections = 11 }, "database.min_connections must not exceed"},
		{"database connect timeout", func(c *config.Config) { c.Database.ConnectTimeout = 0 }, "database.connect_timeout"},
		{"database idle timeout", func(c *config.Config) { c.Database.IdleTimeout = 0 }, "database.idle_timeout"},
		{"database max lifetime", func(c *config.Config) { c.Database.MaxLifetime = 0 }, "database.max_lifetime"},
		{"redis url missing", func(c *config.Config) { c.Redis.URL = "" }, "redis.url (REDIS_URL) is required"},
		{"redis url scheme", func(c *config.Config) { c.Redis.URL = "http://localhost:6379" }, "redis.url (REDIS_URL) must be a redis:// or rediss:// URL"},
		{"redis url no scheme", func(c *config.Config) { c.Redis.URL = "localhost:6379" }, "redis.url"},
		{"redis url db", func(c *config.Config) { c.Redis.URL = "redis://localhost:6379/x" }, "redis.url"},
		{"rediss url", func(c *config.Config) { c.Redis.URL = "rediss://:pw@localhost:6380/3" }, ""},
		{"redis pool", func(c *config.Config) { c.Redis.PoolSize = 0 }, "redis.pool_size (REDIS_POOL_SIZE)"},
		{"redis connection timeout", func(c *config.Config) { c.Redis.ConnectionTimeout = 0 }, "redis.connection_timeout"},
		{"redis read timeout", func(c *config.Config) { c.Redis.ReadTimeout = 0 }, "redis.read_timeout"},
		{"redis write timeout", func(c *config.Config) { c.Redis.WriteTimeout = 0 }, "redis.write_timeout"},
		{"jwt expiration", func(c *config.Config) { c.Security.JWTExpiration = 0 }, "security.jwt_expiration (JWT_EXPIRATION)"},
		{"rate limit requests", func(c *config.Config) { c.Security.RateLimitRequests = 0 }, "security.rate_limit_requests"},
		{"rate limit window", func(c *config.Config) { c.Security.RateLimitWindow = 0 }, "security.rate_limit_window"},
		{"trusted proxies", func(c *config.Config) { c.Security.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "::1/128"} }, ""},
		{"trusted proxy bad", func(c *config.Config) { c.Security.TrustedProxies = []string{"10.0.0.0/33"} }, "security.trusted_proxies"},
		{"jwt issuer", func(c *config.Config) { c.Security.JWTIssuer = "" }, "security.jwt_issuer"},
		{"jwt audience", func(c *config.Config) { c.Security.JWTAudience = " " }, "security.jwt_audience"},
		{"jwt secret short", func(c *config.Config) { c.Security.JWTSecret = strings.Repeat("x", 31) }, "security.jwt_secret (JWT_SECRET) is too short"},
		{"jwt secret 32", func(c *config.Config) { c.Security.JWTSecret = strings.Repeat("x", 32) }, ""},
		{"jwt secret empty", func(c *config.Config) { c.Security.JWTSecret = "" }, "security.jwt_secret (JWT_SECRET) is not set"},
		{"audit key placeholder", func(c *config.Config) { c.Security.AuditKey = config.DevAuditKey }, "security.audit_key (AUDIT_HMAC_KEY) is a placeholder"},
		{"audit key short", func(c *config.Config) { c.Security.AuditKey = strings.Repeat("a", 31) }, "security.audit_key (AUDIT_HMAC_KEY) is too short"},
		{"audit key empty", func(c *config.Config) { c.Security.AuditKey = "" }, "security.audit_key (AUDIT_HMAC_KEY) is not set"},
		{"audit key is the jwt secret", func(c *config.Config) { c.Security.AuditKey = strongSecret }, "security.audit_key (AUDIT_HMAC_KEY) must differ from security.jwt_secret"},
		{"previous audit key short", func(c *config.Config) { c.Security.PreviousAuditKeys = []string{strings.Repeat("b", 40), "short"} }, "security.previous_audit_keys (AUDIT_HMAC_PREVIOUS_KEYS): key 2 is shorter than 32 bytes"},
		{"audit key 32", func(c *config.Config) { c.Security.AuditKey = strings.Repeat("a", 32) }, ""},
		{"enrollment short", func(c *config.Config) { c.Security.AgentEnrollmentSecret = "short" }, "security.agent_enrollment_secret (AGENT_ENROLLMENT_SECRET) is too short"},
		{"enrollment 16", func(c *config.Config) { c.Security.AgentEnrollmentSecret = strings.Repeat("e", 16) }, ""},
		{"short secrets in dev mode", func(c *config.Config) {
			c.Server.DevMode = true
			c.Security.JWTSecret = ""
			c.Security.AgentEnrollmentSecret = "dev"
		}, ""},
		{"max agent connections", func(c *config.Config) { c.AgentManagement.MaxAgentConnections = 0 }, "agent_management.max_agent_connections (MAX_AGENT_CONNECTIONS)"},
		{"bootstrap max agents", func(c *config.Config) { c.AgentManagement.BootstrapMaxAgents = -1 }, "agent_management.bootstrap_max_agents (AGENT_ENROLLMENT_MAX_AGENTS)"},
		{"heartbeat", func(c *config.Config) { c.AgentManagement.HeartbeatInterval = 0 }, "agent_management.heartbeat_interval (AGENT_HEARTBEAT_INTERVAL)"},
		{"agent connection timeout", func(c *config.Config) { c.AgentManagement.ConnectionTimeout = 0 }, "agent_management.connection_timeout"},
		{"reconnect attempts", func(c *config.Config) { c.AgentManagement.MaxReconnectAttempts = -1 }, "agent_management.max_reconnect_attempts"},
		{"reconnect backoff", func(c *config.Config) { c.AgentManagement.ReconnectBackoffMs = 0 }, "agent_management.reconnect_backoff_ms"},
		{"max concurrent commands", func(c *config.Config) { c.Command.MaxConcurrentCommands = 0 }, "command.max_concurrent_commands (MAX_CONCURRENT_COMMANDS)"},
		{"command timeout", func(c *config.Config) { c.Command.CommandTimeout = 0 }, "command.command_timeout (COMMAND_TIMEOUT)"},
		{"queue size", func(c *config.Config) { c.Command.MaxCommandQueueSize = 0 }, "command.max_command_queue_size"},
		{"retry attempts", func(c *config.Config) { c.Command.RetryAttempts = -1 }, "command.retry_attempts"},
		{"retry attempts 0", func(c *config.Config) { c.Command.RetryAttempts = 0 }, ""},
		{"retry delay", func(c *config.Config) { c.Command.RetryDelayMs = 0 }, "command.retry_delay_ms"},
		{"collection interval", func(c *config.Config) { c.Telemetry.CollectionInterval = 0 }, "telemetry.collection_interval"},
		{"retention", func(c *config.Config) { c.Telemetry.RetentionDays = 0 }, "telemetry.retention_days"},
		{"batch size", func(c *config.Config) { c.Telemetry.BatchSize = 0 }, "telemetry.batch_size"},
		{"flush interval", func(c *config.Config) { c.Telemetry.FlushInterval = 0 }, "telemetry.flush_interval"},
		{"log level", func(c *config.Config) { c.Logging.Level = "verbose" }, "logging.level (LOG_LEVEL)"},
		{"log level warning", func(c *config.Config) { c.Logging.Level = "warning" }, ""},
		{"log level upper", func(c *config.Config) { c.Logging.Level = "DEBUG" }, ""},
		{"log format", func(c *config.Config) { c.Logging.Format = "xml" }, "logging.format (LOG_FORMAT)"},
		{"log output empty", func(c *config.Config) { c.Logging.Output = "" }, "logging.output"},
		{"log output dir", func(c *config.Config) { c.Logging.Output = "/var/log/" }, "logging.output"},
		{"log output file", func(c *config.Config) { c.Logging.Output = "/var/log/viworks.log" }, ""},
		{"log output stderr", func(c *config.Config) { c.Logging.Output = "stderr" }, ""},
		{"max file size", func(c *config.Config) { c.Logging.MaxFileSize = -1 }, "logging.max_file_size"},
		{"max files", func(c *config.Config) { c.Logging.MaxFiles = -1 }, "logging.max_files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "\n", "one problem, one line")
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := valid()
	c.Server.Port = 0
	c.Redis.PoolSize = 0
	c.Logging.Format = "xml"
	err := c.Validate()
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 3)
	require.Contains(t, lines[0], "server.port")
	require.Contains(t, lines[1], "redis.pool_size")
	require.Contains(t, lines[2], "logging.format")

	// Load returns the same lines.
	_, err = (&config.Flags{}).Load(c, env{}.get)
	require.Len(t, strings.Split(err.Error(), "\n"), 3)
}

func TestPlaceholderSecret(t *testing.T) {
	const msg = "security.jwt_secret (JWT_SECRET) is a placeholder; set a random secret of at least 32 bytes (or enable dev mode)"
	for _, p := range []string{"change-me-in-production", "your-super-secret-jwt-key-here", "changeme", "secret", "ChangeMe"} {
		t.Run(p, func(t *testing.T) {
			c := valid()
			c.Security.JWTSecret = p
			err := c.Validate()
			require.EqualError(t, err, msg)

			// Through Load, from the environment, with and without dev mode.
			_, err = (&config.Flags{}).Load(config.Default(), env{"JWT_SECRET": p, "AUDIT_HMAC_KEY": strongAuditKey}.get)
			require.EqualError(t, err, msg)
			got, err := (&config.Flags{}).Load(config.Default(), env{"JWT_SECRET": p, "VIWORKS_DEV_MODE": "1"}.get)
			require.NoError(t, err)
			require.Equal(t, p, got.Security.JWTSecret)
			_, err = load(t, config.Default(), []string{"--dev"}, env{"JWT_SECRET": p, "AUDIT_HMAC_KEY": strongAuditKey})
			require.NoError(t, err)

			c.Server.DevMode = true
			require.NoError(t, c.Validate())
		})
	}
	// The seed's own default is refused outside dev mode.
	_, err := (&config.Flags{}).Load(config.Default(), env{"AUDIT_HMAC_KEY": strongAuditKey}.get)
	require.EqualError(t, err, msg)

	c := valid()
	c.Security.AgentEnrollmentSecret = "changeme"
	require.ErrorContains(t, c.Validate(), "security.agent_enrollment_secret (AGENT_ENROLLMENT_SECRET) is a placeholder")
}

func TestRedacted(t *testing.T) {
	for _, tc := range []struct {
		name, db, redis string
		hidden          []string
		wantDB, wantRed string
	}{
		{name: "url passwords", db: "postgresql://viworks:pg-pass-1@localhost:5432/viworks?sslmode=disable", redis: "redis://user:redis-pass-1@cache:6379/0",
			hidden: []string{"pg-pass-1", "redis-pass-1"},
			wantDB: "postgresql://viworks:REDACTED@localhost:5432/viworks?sslmode=disable", wantRed: "redis://user:REDACTED@cache:6379/0"},
		{name: "redis password only", db: "postgres://u@h/db", redis: "rediss://:redis-pass-2@cache:6380",
			hidden: []string{"redis-pass-2"},
			wantDB: "postgres://u@h/db", wantRed: "rediss://:REDACTED@cache:6380"},
		{name: "redis lone user is a password", db: "postgres://h/db?password=pg-pass-3&sslmode=require", redis: "redis://redis-pass-3@cache",
			hidden:  []string{"pg-pass-3", "redis-pass-3"},
			wantRed: "redis://REDACTED@cache"},
		{name: "dsn", db: "host=db user=u password='pg pass\\'4' dbname=x", redis: "redis://cache",
			hidden: []string{"pg pass", "pass\\'4"},
			wantDB: "host=db user=u password=REDACTED dbname=x", wantRed: "redis://cache"},
		{name: "dsn bare", db: "password=pg-pass-5 host=db", redis: "redis://cache",
			hidden: []string{"pg-pass-5"},
			wantDB: "password=REDACTED host=db"},
		{name: "unparsable", db: "postgres://u:pg-pass-6@h:port/db", redis: "redis://u:redis-pass-6@h:po rt",
			hidden: []string{"pg-pass-6", "redis-pass-6"},
			wantDB: "REDACTED", wantRed: "REDACTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			c.Security.AgentEnrollmentSecret = "enrollment-secret-value"
			c.Database.URL = tc.db
			c.Redis.URL = tc.redis
			r := c.Redacted()

			require.Equal(t, "REDACTED", r.Security.JWTSecret)
			require.Equal(t, "REDACTED", r.Security.AgentEnrollmentSecret)
			if tc.wantDB != "" {
				require.Equal(t, tc.wantDB, r.Database.URL)
			}
			if tc.wantRed != "" {
				require.Equal(t, tc.wantRed, r.Redis.URL)
			}
			dump := r.Database.URL + " " + r.Redis.URL
			if u, err := url.QueryUnescape(dump); err == nil {
				dump += " " + u
			}
			for _, s := range append(tc.hidden, strongSecret, "enrollment-secret-value") {
				require.NotContains(t, dump+r.Security.JWTSecret+r.Security.AgentEnrollmentSecret, s)
			}

			// The original is untouched and other fields are kept.
			require.Equal(t, strongSecret, c.Security.JWTSecret)
			require.Equal(t, tc.db, c.Database.URL)
			require.Equal(t, c.Server, r.Server)
		})
	}

	// Empty secrets stay empty, so an unset secret remains visible as such.
	c := config.Default()
	c.Security.JWTSecret = ""
	r := c.Redacted()
	require.Empty(t, r.Security.JWTSecret)
	require.Empty(t, r.Security.AgentEnrollmentSecret)
	require.Equal(t, "postgresql://viworks:REDACTED@localhost/viworks", r.Database.URL)
	require.Equal(t, "redis://localhost:6379", r.Redis.URL)
}

func TestErrorsNeverContainSecrets(t *testing.T) {
	const (
		jwt    = "short-jwt-Z9q"
		enroll = "enr-Z9q"
		pgPass = "pg-Z9q-pass"
		rdPass = "rd-Z9q-pass"
	)
	for _, tc := range []struct {
		name string
		e    env
	}{
		{"short secrets", env{"JWT_SECRET": jwt, "AGENT_ENROLLMENT_SECRET": enroll}},
		{"bad database scheme", env{"JWT_SECRET": jwt, "DATABASE_URL": "mysql://u:" + pgPass + "@h/db"}},
		{"bad database port", env{"JWT_SECRET": jwt, "DATABASE_URL": "postgres://u:" + pgPass + "@h:port/db"}},
		{"bad database dsn", env{"JWT_SECRET": jwt, "DATABASE_URL": "host=h password='" + pgPass}},
		{"bad redis scheme", env{"JWT_SECRET": jwt, "REDIS_URL": "http://:" + rdPass + "@h"}},
		{"bad redis url", env{"JWT_SECRET": jwt, "REDIS_URL": "redis://:" + rdPass + "@h:po rt"}},
		{"bad redis db", env{"JWT_SECRET": jwt, "REDIS_URL": "redis://:" + rdPass + "@h/db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (&config.Flags{}).Load(config.Default(), tc.e.get)
			require.Error(t, err)
			for _, s := range []string{jwt, enroll, pgPass, rdPass, "Z9q"} {
				require.NotContains(t, err.Error(), s)
			}
		})
	}
}

func TestHelpers(t *testing.T) {
	c := config.Default()
	require.Equal(t, "0.0.0.0:8080", c.ListenAddr())
	c.Server.BindAddress = "::1"
	c.Server.Port = 9443
	require.Equal(t, "[::1]:9443", c.ListenAddr())
	c.Server.BindAddress = ""
	require.Equal(t, ":9443", c.ListenAddr())

	for _, tc := range []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"heartbeat", c.HeartbeatInterval(), 30 * time.Second},
		{"command timeout", c.CommandTimeout(), 60 * time.Second},
		{"request timeout", c.RequestTimeout(), 30 * time.Second},
		{"flush interval", c.FlushInterval(), 5 * time.Second},
		{"shutdown timeout", c.ShutdownTimeout(), 15 * time.Second},
		{"agent connection timeout", c.ConnectionTimeout(), 60 * time.Second},
		{"redis connection timeout", c.RedisConnectionTimeout(), 5 * time.Second},
		{"redis read timeout", c.RedisReadTimeout(), 3 * time.Second},
		{"redis write timeout", c.RedisWriteTimeout(), 3 * time.Second},
		{"db connect timeout", c.DatabaseConnectTimeout(), 10 * time.Second},
		{"db idle timeout", c.DatabaseIdleTimeout(), 300 * time.Second},
		{"db max lifetime", c.DatabaseMaxLifetime(), time.Hour},
		{"jwt expiration", c.JWTExpiration(), time.Hour},
		{"rate limit window", c.RateLimitWindow(), time.Minute},
		{"reconnect backoff", c.ReconnectBackoff(), time.Second},
		{"retry delay", c.RetryDelay(), time.Second},
		{"collection interval", c.CollectionInterval(), 30 * time.Second},
		{"retention", c.Retention(), 30 * 24 * time.Hour},
	} {
		require.Equal(t, tc.want, tc.got, tc.name)
	}
}

func TestNilFlagsAndFlagRegistration(t *testing.T) {
	var f *config.Flags
	c, err := f.Load(valid(), env{"BACKEND_AGENT_PORT": "8181"}.get)
	require.NoError(t, err)
	require.Equal(t, 8181, c.Server.Port)

	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	config.AddFlags(fs)
	for _, n := range []string{"config", "bind-address", "port", "log-level", "log-format", "dev"} {
		require.NotNil(t, fs.Lookup(n), n)
	}
}

func TestRemovedKeys(t *testing.T) {
	for _, key := range []string{"server.cors_origins", "security.allowed_origins"} {
		t.Run(key, func(t *testing.T) {
			section, k, _ := strings.Cut(key, ".")
			file := writeFile(t, "["+section+"]\n"+k+" = [\"*\"]\n")
			_, err := load(t, config.Default(), []string{"--config", file, "--dev"}, env{})
			require.ErrorContains(t, err, key+" was removed: the API sends no CORS headers")
		})
	}
}

func TestDevModeFileBindAddress(t *testing.T) {
	file := writeFile(t, "[server]\nbind_address = \"0.0.0.0\"\n")
	c, err := load(t, config.Default(), []string{"--config", file, "--dev"}, env{})
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0", c.Server.BindAddress, "an explicit bind address wins over dev mode's loopback")
}

func TestTokenLifetimeKeys(t *testing.T) {
	c, err := load(t, config.Default(), []string{"--dev"}, env{"MAX_TOKEN_LIFETIME": "3600"})
	require.NoError(t, err)
	require.Equal(t, time.Hour, c.MaxTokenLifetime())
	_, err = load(t, config.Default(), []string{"--dev"}, env{"MAX_TOKEN_LIFETIME": "1800"})
	require.ErrorContains(t, err, "security.jwt_expiration (JWT_EXPIRATION) must not exceed security.max_token_lifetime")
	_, err = load(t, config.Default(), []string{"--dev"}, env{"MAX_TOKEN_LIFETIME": "99999999"})
	require.ErrorContains(t, err, "security.max_token_lifetime (MAX_TOKEN_LIFETIME) must be between 60 and 2592000")
}

// TestArgsKeyAndWebhookCIDRs: the args key must decode to 32 bytes and not be
// a placeholder; the webhook allow-list must hold CIDRs or addresses; the keys
// are redacted.
func TestArgsKeyAndWebhookCIDRs(t *testing.T) {
	base := config.Default()
	base.Security.JWTSecret = strongSecret
	base.Security.AuditKey = strongAuditKey
	for _, tc := range []struct {
		name   string
		edit   func(c *config.Config)
		errSub string
	}{
		{"no key", func(*config.Config) {}, ""},
		{"hex key", func(c *config.Config) { c.Security.ArgsEncryptionKey = strings.Repeat("0f", 32) }, ""},
		{"base64 key", func(c *config.Config) { c.Security.ArgsEncryptionKey = "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=" }, ""},
		{"placeholder", func(c *config.Config) { c.Security.ArgsEncryptionKey = "change-me-in-production" }, "security.args_encryption_key (ARGS_ENCRYPTION_KEY) is a placeholder"},
		{"short", func(c *config.Config) { c.Security.ArgsEncryptionKey = "c2hvcnQ=" }, "decodes to 5 bytes"},
		{"previous bad", func(c *config.Config) {
			c.Security.ArgsEncryptionKey = strings.Repeat("0f", 32)
			c.Security.ArgsPreviousKeys = []string{"nope!"}
		}, "security.args_previous_keys[0]"},
		{"cidrs", func(c *config.Config) {
			c.Alerts.WebhookAllowedCIDRs = []string{"10.0.0.0/8", "fd00::/8", "192.168.1.5"}
		}, ""},
		{"bad cidr", func(c *config.Config) { c.Alerts.WebhookAllowedCIDRs = []string{"10.0.0.0/33"} }, "alerts.webhook_allowed_cidrs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			err := c.Validate()
			if tc.errSub == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.errSub)
			require.NotContains(t, err.Error(), "change-me")
		})
	}
	c := base
	c.Security.ArgsEncryptionKey = strings.Repeat("0f", 32)
	c.Security.ArgsPreviousKeys = []string{strings.Repeat("1e", 32)}
	r := c.Redacted()
	require.Equal(t, config.RedactedValue, r.Security.ArgsEncryptionKey)
	require.Equal(t, []string{config.RedactedValue}, r.Security.ArgsPreviousKeys)
	require.Equal(t, strings.Repeat("1e", 32), c.Security.ArgsPreviousKeys[0], "the original is not changed")
}
