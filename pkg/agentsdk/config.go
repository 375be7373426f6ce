package agentsdk

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

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
	// enroll again by itself), the replay window of accepted COMMANDs
	// (their nonces), so a captured COMMAND replayed after a restart is
	// still refused, the results waiting for RESULT_ACK (outbox/, one file
	// per execution, written before the result is sent) and, with
	// TrustOnFirstUse, the pinned signing key. Give every agent its own.
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
	// refused). Nothing is trusted before that first WELCOME. The pin is
	// kept in StateDir when set; without it a restarted process trusts the
	// first gateway it reaches again. TOFU protects against a platform key that changes after the
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
