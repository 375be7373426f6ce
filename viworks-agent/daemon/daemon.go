// Package daemon turns a viworks-agent configuration into a running agent on
// pkg/agentsdk: identity, trust, TLS, telemetry and the enabled verbs.
package daemon

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/viworks-agent/config"
	"github.com/viworks/backend-agent/viworks-agent/verbs"
)

// New builds the agent of cfg (already validated). version is reported in
// HELLO and by system_info.
func New(cfg config.Config, version string, log logrus.FieldLogger) (*agentsdk.Agent, error) {
	secret, err := cfg.Secret()
	if err != nil {
		return nil, err
	}
	trusted, err := trustedKeys(cfg.SigningPublicKey)
	if err != nil {
		return nil, err
	}
	if trusted == nil {
		log.WithField("state_dir", cfg.StateDir).Warn("SECURITY: no signing_public_key configured: the agent trusts the COMMAND signing key " +
			"the first gateway it reaches announces (kept in state_dir); set signing_public_key to pin it")
	}
	dialer, err := newDialer(cfg.TLS)
	if err != nil {
		return nil, err
	}
	telemetry := agentsdk.HostTelemetryMounts(cfg.Mounts...)
	vs, err := verbs.New(cfg, telemetry, version)
	if err != nil {
		return nil, err
	}
	capabilities := slices.Sorted(slices.Values(cfg.Verbs))
	if capabilities == nil {
		capabilities = []string{} // announce none, not every handler
	}
	a, err := agentsdk.New(agentsdk.Config{
		URL:               cfg.Gateway,
		AgentID:           cfg.AgentID,
		EnrollmentSecret:  secret,
		StateDir:          cfg.StateDir,
		Site:              cfg.Site,
		Version:           version,
		Labels:            cfg.Labels,
		Capabilities:      capabilities,
		Handlers:          vs.Handlers(),
		Telemetry:         telemetry,
		TelemetryInterval: cfg.CollectionInterval.Duration,
		TrustedKeys:       trusted,
		TrustOnFirstUse:   trusted == nil,
		Dialer:            dialer,
		Logger:            log,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// trustedKeys reads signing_public_key: a base64 Ed25519 key, or a file
// holding one (PEM or base64). nil when it is empty.
func trustedKeys(v string) (map[string]ed25519.PublicKey, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	pub, err := signing.DecodePublicKey(v)
	if err != nil {
		if _, statErr := os.Stat(v); statErr != nil {
			return nil, fmt.Errorf("signing_public_key is neither a base64 Ed25519 public key nor a readable file: %w", err)
		}
		if pub, err = signing.LoadPublicKey(v); err != nil {
			return nil, fmt.Errorf("signing_public_key: %w", err)
		}
	}
	return map[string]ed25519.PublicKey{signing.KeyID(pub): pub}, nil
}

// newDialer returns the WebSocket dialer: the system's roots or ca_file, and
// the client certificate for the gateway's mTLS mode.
func newDialer(c config.TLS) (*websocket.Dialer, error) {
	d := &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: agentsdk.DefaultHandshakeTimeout}
	if c.CAFile == "" && c.CertFile == "" {
		return d, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("tls.ca_file holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	d.TLSClientConfig = tc
	return d, nil
}
