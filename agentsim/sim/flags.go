package sim

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// EnvEnrollmentSecret is read when --enrollment-secret is not given, so the
// secret need not appear in the process list.
const EnvEnrollmentSecret = "AGENT_ENROLLMENT_SECRET"

// Options is the agentsim command line.
type Options struct {
	Gateway           string            // ws://HOST:PORT/ws/agent
	Agents            int               // number of simulated agents
	Prefix            string            // agent id prefix; ids are Prefix+index
	StartIndex        int               // first index
	EnrollmentSecret  string            // exchanged by each agent for its own credential
	Site              string            // site announced in HELLO
	Labels            map[string]string // labels announced in HELLO
	ConnectRate       float64           // agents started per second
	TelemetryInterval time.Duration     // 0: the gateway's interval
	HeartbeatInterval time.Duration     // 0: the gateway's interval
	// TelemetryWhenConnected holds every agent's TELEMETRY until all agents
	// of the process have connected once (a load test's fleet connects
	// before its load starts).
	TelemetryWhenConnected bool
	MinBackoff             time.Duration // 0: the SDK's default; without a gateway policy the first reconnect delay
	MaxBackoff             time.Duration // 0: the SDK's default; caps every reconnect delay (the gateway's policy too)
	LogLevel               string        // logrus level
	LogFormat              string        // text, json or auto (text on a terminal)

	// COMMAND verification (docs/protocol.md).
	TrustOnFirstUse    bool   // pin the signing key of the first WELCOME (default true)
	SigningPublicKey   string // file of the platform's public key to pin; wins over TrustOnFirstUse
	InsecureSkipVerify bool   // accept unsigned COMMANDs; tests only

	// StateDir keeps each agent's credential and replay window under
	// StateDir/<escaped agent id> across restarts ("": nothing is kept, so a
	// restarted fleet cannot enroll its ids again).
	StateDir string

	// Load generation.
	HostTelemetry bool // report this host's real metrics instead of simulated ones
	SourceIPs     int  // > 0: agent i dials from 127.0.0.(1 + i%SourceIPs); loopback gateways only
}

// MaxSourceIPs bounds --source-ips: the sources are 127.0.0.1 .. 127.0.0.254.
const MaxSourceIPs = 254

// DefaultOptions returns the defaults of the optional flags.
func DefaultOptions() Options {
	return Options{
		Prefix:      "sim-",
		ConnectRate: 500,
		LogLevel:    "info",
		LogFormat:   "auto",

		TrustOnFirstUse: true,
	}
}

func newFlagSet(o *Options, labels *string) *flag.FlagSet {
	fs := flag.NewFlagSet("agentsim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.Gateway, "gateway", o.Gateway, "gateway agent endpoint, ws://HOST:PORT/ws/agent or wss://... (required)")
	fs.IntVar(&o.Agents, "agents", o.Agents, "number of simulated agents (required, >= 1)")
	fs.StringVar(&o.Prefix, "prefix", o.Prefix, "agent id prefix; agent ids are the prefix followed by the index")
	fs.IntVar(&o.StartIndex, "start-index", o.StartIndex, "index of the first agent")
	fs.StringVar(&o.EnrollmentSecret, "enrollment-secret", o.EnrollmentSecret, "enrollment secret (default $"+EnvEnrollmentSecret+")")
	fs.StringVar(&o.Site, "site", o.Site, "site every agent reports in HELLO (only reported: selectors match the site its enrollment secret or an admin set)")
	fs.StringVar(labels, "labels", "", "labels every agent reports in HELLO, k=v,k2=v2 (only reported, like --site)")
	fs.Float64Var(&o.ConnectRate, "connect-rate", o.ConnectRate, "agents started per second")
	fs.DurationVar(&o.TelemetryInterval, "telemetry-interval", o.TelemetryInterval, "telemetry interval, e.g. 10s (0: the gateway's)")
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", o.HeartbeatInterval, "heartbeat interval, e.g. 5s (0: the gateway's)")
	fs.BoolVar(&o.TelemetryWhenConnected, "telemetry-when-connected", o.TelemetryWhenConnected,
		"send no TELEMETRY until every agent of this process has connected once (load tests: the fleet connects before the load starts)")
	fs.DurationVar(&o.MinBackoff, "min-backoff", o.MinBackoff, "first reconnect delay when the gateway advertises no policy (0: the SDK's 500ms)")
	fs.DurationVar(&o.MaxBackoff, "max-backoff", o.MaxBackoff,
		"cap of every reconnect delay, also of the gateway's WELCOME policy (0: the SDK's 30s); reconnects wait a uniform random delay up to the cap (full jitter)")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir,
		"`DIR` keeping each agent's credential and replay window across restarts (DIR/<agent id>); without it a restarted fleet is refused re-enrollment of its ids")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "log level: debug, info, warn, error")
	fs.StringVar(&o.LogFormat, "log-format", o.LogFormat, "log format: text, json or auto (text on a terminal, json otherwise)")
	fs.BoolVar(&o.TrustOnFirstUse, "trust-on-first-use", o.TrustOnFirstUse,
		"pin the COMMAND signing key announced in each agent's first WELCOME and refuse any other (ignored with --signing-public-key)")
	fs.StringVar(&o.SigningPublicKey, "signing-public-key", o.SigningPublicKey,
		"`FILE` with the platform's Ed25519 public key (PEM or base64) to pin: COMMANDs signed by other keys are refused")
	fs.BoolVar(&o.InsecureSkipVerify, "insecure-skip-verify", o.InsecureSkipVerify,
		"accept COMMANDs without checking their signature (tests and development only)")
	fs.BoolVar(&o.HostTelemetry, "host-telemetry", o.HostTelemetry,
		"agents report this host's real metrics (Linux /proc and statfs) instead of simulated ones")
	fs.IntVar(&o.SourceIPs, "source-ips", o.SourceIPs,
		"spread the agents' connections over `N` loopback source addresses, agent i dialing from 127.0.0.(1 + i%N), "+
			"so one machine can hold more than ~28k connections to one gateway port (Linux; the gateway must be 127.x.x.x or localhost; 0: off, at most 254)")
	return fs
}

// Usage writes the command line help to w.
func Usage(w io.Writer) {
	o := DefaultOptions()
	var labels string
	fs := newFlagSet(&o, &labels)
	fs.SetOutput(w)
	fmt.Fprintln(w, "Usage: agentsim --gateway ws://HOST:PORT/ws/agent --agents N --prefix PFX --enrollment-secret S [--site SITE] [--labels k=v,...]")
	fmt.Fprintln(w, "       [--signing-public-key FILE | --trust-on-first-use=false --insecure-skip-verify]")
	fmt.Fprintln(w, "       [--state-dir DIR] [--host-telemetry] [--source-ips N]")
	fmt.Fprintln(w, "       [--heartbeat-interval D] [--telemetry-interval D] [--telemetry-when-connected] [--min-backoff D] [--max-backoff D]")
	fmt.Fprintln(w, "Runs N simulated agents until SIGINT/SIGTERM. Each agent enrolls with the secret, then connects.")
	fmt.Fprintln(w, "Telemetry is simulated per agent unless --host-telemetry reports this machine's own numbers.")
	fmt.Fprintln(w, "Beyond ~28k agents against one loopback gateway port, --source-ips N spreads the connections")
	fmt.Fprintln(w, "over N source addresses (each gives another ~28k ephemeral ports); mind the open-files limit (ulimit -n).")
	fs.PrintDefaults()
}

// ParseFlags parses and validates the command line. It returns flag.ErrHelp
// for -h/--help.
func ParseFlags(args []string) (Options, error) {
	o := DefaultOptions()
	var labels string
	fs := newFlagSet(&o, &labels)
	if err := fs.Parse(args); err != nil {
		return Options{}, err
	}
	if fs.NArg() > 0 {
		return Options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.EnrollmentSecret == "" {
		o.EnrollmentSecret = os.Getenv(EnvEnrollmentSecret)
	}
	var err error
	if o.Labels, err = ParseLabels(labels); err != nil {
		return Options{}, err
	}
	if err := o.Validate(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// ParseLabels parses "k=v,k2=v2". Empty input gives no labels; empty entries,
// entries without '=', empty or duplicate keys are errors.
func ParseLabels(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	labels := map[string]string{}
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, errors.New("--labels: empty entry (want k=v,k2=v2)")
		}
		k, v, ok := strings.Cut(entry, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok:
			return nil, fmt.Errorf("--labels: %q is not key=value", entry)
		case k == "":
			return nil, fmt.Errorf("--labels: %q has an empty key", entry)
		case len(k) > protocol.MaxShortFieldLen || len(v) > protocol.MaxShortFieldLen:
			return nil, fmt.Errorf("--labels: %q: keys and values are at most %d bytes", k, protocol.MaxShortFieldLen)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("--labels: key %q given twice", k)
		}
		labels[k] = v
	}
	if len(labels) > protocol.MaxLabels {
		return nil, fmt.Errorf("--labels: more than %d labels", protocol.MaxLabels)
	}
	return labels, nil
}

// Validate reports every problem of the options, one per line.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if o.Gateway == "" {
		bad("--gateway is required (ws://HOST:PORT/ws/agent)")
	} else if u, err := url.Parse(o.Gateway); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		bad("--gateway %q must be a ws:// or wss:// URL with a host", o.Gateway)
	}
	if o.Agents < 1 {
		bad("--agents must be at least 1")
	}
	if o.StartIndex < 0 {
		bad("--start-index must not be negative")
	}
	if strings.ContainsFunc(o.Prefix, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("--prefix must not contain whitespace or control characters")
	}
	if o.Agents >= 1 && o.StartIndex >= 0 {
		last := o.Prefix + strconv.Itoa(o.StartIndex+o.Agents-1)
		if len(last) > protocol.MaxIDLen {
			bad("--prefix is too long: agent ids must be at most %d bytes", protocol.MaxIDLen)
		}
	}
	if o.EnrollmentSecret == "" {
		bad("--enrollment-secret (or $%s) is required", EnvEnrollmentSecret)
	} else if strings.ContainsFunc(o.EnrollmentSecret, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		bad("--enrollment-secret must not contain whitespace or control characters")
	}
	if len(o.Site) > protocol.MaxShortFieldLen {
		bad("--site must be at most %d bytes", protocol.MaxShortFieldLen)
	}
	if !(o.ConnectRate > 0) {
		bad("--connect-rate must be greater than 0")
	}
	if o.TelemetryInterval < 0 {
		bad("--telemetry-interval must not be negative")
	}
	if o.HeartbeatInterval < 0 {
		bad("--heartbeat-interval must not be negative")
	}
	if o.MinBackoff < 0 || o.MaxBackoff < 0 {
		bad("--min-backoff and --max-backoff must not be negative")
	} else if minB := cmp.Or(o.MinBackoff, agentsdk.DefaultMinBackoff); o.MaxBackoff > 0 && minB > o.MaxBackoff {
		bad("--min-backoff (%s) must not exceed --max-backoff (%s)", minB, o.MaxBackoff)
	}
	if _, err := logrus.ParseLevel(o.LogLevel); err != nil {
		bad("--log-level %q is not one of debug, info, warn, error", o.LogLevel)
	}
	switch o.LogFormat {
	case "text", "json", "auto":
	default:
		bad("--log-format %q is not text, json or auto", o.LogFormat)
	}
	if o.SourceIPs < 0 || o.SourceIPs > MaxSourceIPs {
		bad("--source-ips must be between 0 (off) and %d", MaxSourceIPs)
	} else if o.SourceIPs > 0 && o.Gateway != "" {
		if u, err := url.Parse(o.Gateway); err == nil && u.Host != "" && !isIPv4Loopback(u.Hostname()) {
			bad("--source-ips needs a loopback gateway (127.x.x.x or localhost), not %q: "+
				"only loopback accepts every 127.0.0.0/8 source address", u.Hostname())
		}
	}
	if !o.TrustOnFirstUse && o.SigningPublicKey == "" && !o.InsecureSkipVerify {
		bad("no COMMAND signing key is trusted: give --signing-public-key FILE, keep --trust-on-first-use, or (tests only) --insecure-skip-verify")
	}
	return errors.Join(errs...)
}

// isIPv4Loopback tells whether host is "localhost" or an IPv4 loopback
// address: the gateways --source-ips can reach from 127.0.0.0/8 (IPv6 has a
// single loopback address).
func isIPv4Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().Is4() && ip.IsLoopback()
}

// NewLogger builds the logger for level and format ("auto": text when w is a
// terminal, JSON otherwise).
func NewLogger(level, format string, w io.Writer) (*logrus.Logger, error) {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(lvl)
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	switch format {
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	default:
		return nil, fmt.Errorf("unknown log format %q", format)
	}
	return l, nil
}
