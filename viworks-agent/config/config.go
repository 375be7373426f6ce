// Package config reads the viworks-agent configuration file (TOML), applies
// its defaults and validates it.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// Verbs the agent can run; each runs only when listed in Config.Verbs.
const (
	VerbRunScript       = "run_script"
	VerbService         = "service"
	VerbCreatePanelUser = "create_panel_user"
	VerbDeletePanelUser = "delete_panel_user"
	VerbSystemInfo      = "system_info"
)

// KnownVerbs are the verbs this agent implements, sorted.
var KnownVerbs = []string{VerbCreatePanelUser, VerbDeletePanelUser, VerbRunScript, VerbService, VerbSystemInfo}

// Defaults.
const (
	DefaultStateDir           = "/var/lib/viworks-agent"
	DefaultScriptTimeout      = 5 * time.Minute
	DefaultMaxOutputBytes     = protocol.MaxOutputBytes
	DefaultSystemctl          = "systemctl"
	DefaultCollectionInterval = 30 * time.Second
)

// Config is the agent's configuration file.
type Config struct {
	// Gateway is the agent endpoint: ws://host:port/ws/agent or wss://.
	Gateway string `toml:"gateway"`
	// AgentID is this host's identity (default: the host name).
	AgentID string `toml:"agent_id"`
	// StateDir keeps the credential, the replay window, the result outbox
	// and a key pinned on first use (0700; files 0600).
	StateDir string `toml:"state_dir"`
	// EnrollmentSecret (or the file holding it) enrolls the agent once;
	// afterwards the credential in StateDir is used.
	EnrollmentSecret     string `toml:"enrollment_secret"`
	EnrollmentSecretFile string `toml:"enrollment_secret_file"`
	// SigningPublicKey pins the platform's COMMAND signing key: the base64
	// key (as WELCOME announces it) or a file (PEM or base64). Empty: trust
	// the first key announced, with a warning, kept in StateDir.
	SigningPublicKey string `toml:"signing_public_key"`
	// ScriptsDir holds the scripts run_script may run, by name.
	ScriptsDir string `toml:"scripts_dir"`
	// Verbs are the enabled verbs; every other verb is refused.
	Verbs []string `toml:"verbs"`

	Site   string            `toml:"site"`   // reported only: the enrollment secret decides
	Labels map[string]string `toml:"labels"` // reported only
	// CollectionInterval is how often telemetry is sent (default: the
	// gateway's interval).
	CollectionInterval Duration `toml:"collection_interval"`
	// Mounts whose disk usage is reported besides "/".
	Mounts []string `toml:"mounts"`

	TLS       TLS       `toml:"tls"`
	RunScript RunScript `toml:"run_script"`
	Service   Service   `toml:"service"`
	Panel     Panel     `toml:"panel_users"`
	Log       Log       `toml:"log"`
}

// TLS configures wss:// connections: a CA bundle to trust and, for the
// gateway's mTLS mode, a client certificate.
type TLS struct {
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// RunScript configures the run_script verb.
type RunScript struct {
	// User runs the scripts (default: the agent's own user). Another user
	// needs the agent to run as root.
	User string `toml:"user"`
	// Timeout bounds one run; the platform's own timeout may end it sooner.
	Timeout Duration `toml:"timeout"`
	// MaxOutputBytes caps what is kept of stdout and stderr together.
	MaxOutputBytes int `toml:"max_output_bytes"`
}

// Service configures the service verb.
type Service struct {
	// Units are the systemd units the verb may touch.
	Units []string `toml:"units"`
	// Systemctl is the systemctl binary (default: systemctl from PATH).
	Systemctl string `toml:"systemctl"`
}

// Panel configures create_panel_user and delete_panel_user: the hook
// scripts that do the work.
type Panel struct {
	CreateHook string `toml:"create_hook"`
	DeleteHook string `toml:"delete_hook"`
}

// Log configures the agent's log.
type Log struct {
	Level  string `toml:"level"`  // default info
	Format string `toml:"format"` // json (default) or text
}

// Duration is a time.Duration written as "30s", "5m".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. 30s or 5m)", b)
	}
	d.Duration = v
	return nil
}

// Load reads path, applies the defaults and validates the result.
func Load(path string) (Config, error) {
	var c Config
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return Config{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("reading %s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// WithDefaults returns c with the documented defaults applied.
func (c Config) WithDefaults() Config {
	if c.AgentID == "" {
		if h, err := os.Hostname(); err == nil {
			c.AgentID = h
		}
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.RunScript.Timeout.Duration == 0 {
		c.RunScript.Timeout.Duration = DefaultScriptTimeout
	}
	if c.RunScript.MaxOutputBytes == 0 {
		c.RunScript.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if c.Service.Systemctl == "" {
		c.Service.Systemctl = DefaultSystemctl
	}
	return c
}

// Enabled reports whether verb is enabled.
func (c Config) Enabled(verb string) bool { return slices.Contains(c.Verbs, verb) }

// Validate reports every problem of c, one per line.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if u, err := url.Parse(c.Gateway); c.Gateway == "" {
		bad("gateway is required (ws://host:port/ws/agent or wss://...)")
	} else if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		bad("gateway %q must be a ws:// or wss:// URL with a host", c.Gateway)
	}
	if err := protocol.CheckID("agent_id", c.AgentID); err != nil {
		bad("%v", err)
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("state_dir %q must be an absolute path", c.StateDir)
	}
	if c.EnrollmentSecret != "" && c.EnrollmentSecretFile != "" {
		bad("set enrollment_secret or enrollment_secret_file, not both")
	}
	for _, v := range c.Verbs {
		if !slices.Contains(KnownVerbs, v) {
			bad("verbs: unknown verb %q (known: %s)", v, strings.Join(KnownVerbs, ", "))
		}
	}
	if c.Enabled(VerbRunScript) {
		if c.ScriptsDir == "" {
			bad("scripts_dir is required when run_script is enabled")
		} else if st, err := os.Stat(c.ScriptsDir); err != nil || !st.IsDir() {
			bad("scripts_dir %q is not a directory", c.ScriptsDir)
		}
	}
	if c.RunScript.Timeout.Duration < 0 {
		bad("run_script.timeout must not be negative")
	}
	if c.RunScript.MaxOutputBytes < 0 || c.RunScript.MaxOutputBytes > protocol.MaxOutputBytes {
		bad("run_script.max_output_bytes must be 1..%d", protocol.MaxOutputBytes)
	}
	if c.RunScript.User != "" {
		if err := checkUser(c.RunScript.User); err != nil {
			bad("run_script.user: %v", err)
		}
	}
	if c.Enabled(VerbService) && len(c.Service.Units) == 0 {
		bad("service.units is required when service is enabled (the units the verb may touch)")
	}
	for _, u := range c.Service.Units {
		if u == "" || strings.HasPrefix(u, "-") || strings.ContainsAny(u, " /\t\n") {
			bad("service.units: %q is not a unit name", u)
		}
	}
	if c.Enabled(VerbCreatePanelUser) && c.Panel.CreateHook == "" {
		bad("panel_users.create_hook is required when create_panel_user is enabled")
	}
	if c.Enabled(VerbDeletePanelUser) && c.Panel.DeleteHook == "" {
		bad("panel_users.delete_hook is required when delete_panel_user is enabled")
	}
	for _, h := range []struct{ key, path string }{{"panel_users.create_hook", c.Panel.CreateHook}, {"panel_users.delete_hook", c.Panel.DeleteHook}} {
		if h.path != "" && !filepath.IsAbs(h.path) {
			bad("%s %q must be an absolute path", h.key, h.path)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls.cert_file and tls.key_file go together")
	}
	if c.CollectionInterval.Duration < 0 {
		bad("collection_interval must not be negative")
	}
	return errors.Join(errs...)
}

// checkUser refuses a user that does not exist, and another user than the
// agent's own when the agent is not root (it could not switch to it).
func checkUser(name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("no such user %q", name)
	}
	if os.Geteuid() != 0 && u.Uid != fmt.Sprint(os.Geteuid()) {
		return fmt.Errorf("running scripts as %q needs the agent to run as root (it runs as uid %d)", name, os.Geteuid())
	}
	return nil
}

// Secret returns the enrollment secret, read from EnrollmentSecretFile when
// that is set.
func (c Config) Secret() (string, error) {
	if c.EnrollmentSecretFile == "" {
		return c.EnrollmentSecret, nil
	}
	b, err := os.ReadFile(c.EnrollmentSecretFile)
	if err != nil {
		return "", fmt.Errorf("reading enrollment_secret_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
