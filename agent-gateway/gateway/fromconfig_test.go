package gateway

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/config"
)

func TestConfigFromMapsTheSharedConfiguration(t *testing.T) {
	cases := []struct {
		name string
		set  func(*config.Config)
		got  func(Config) any
		want any
	}{
		{"enrollment secret", func(c *config.Config) { c.Security.AgentEnrollmentSecret = "s3cret" }, func(c Config) any { return c.EnrollmentSecret }, "s3cret"},
		{"heartbeat", func(c *config.Config) { c.AgentManagement.HeartbeatInterval = 11 }, func(c Config) any { return c.HeartbeatInterval }, 11 * time.Second},
		{"telemetry interval", func(c *config.Config) { c.Telemetry.CollectionInterval = 12 }, func(c Config) any { return c.TelemetryInterval }, 12 * time.Second},
		{"max connections", func(c *config.Config) { c.AgentManagement.MaxAgentConnections = 13 }, func(c Config) any { return c.MaxConnections }, 13},
		{"handshake timeout", func(c *config.Config) { c.AgentManagement.ConnectionTimeout = 14 }, func(c Config) any { return c.HandshakeTimeout }, 14 * time.Second},
		{"flush interval", func(c *config.Config) { c.Telemetry.FlushInterval = 2 }, func(c Config) any { return c.FlushInterval }, 2 * time.Second},
		{"telemetry batch", func(c *config.Config) { c.Telemetry.BatchSize = 15 }, func(c Config) any { return c.TelemetryBatch }, 15},
		{"retry base", func(c *config.Config) { c.Command.RetryDelayMs = 250 }, func(c Config) any { return c.Retry.Base }, 250 * time.Millisecond},
		{"drain window", func(c *config.Config) { c.AgentManagement.DrainSeconds = 16 }, func(c Config) any { return c.DrainWindow }, 16 * time.Second},
		{"hello timeout", func(c *config.Config) { c.AgentManagement.HelloTimeoutSeconds = 17 }, func(c Config) any { return c.HelloTimeout }, 17 * time.Second},
		{"frame rate", func(c *config.Config) { c.AgentManagement.MaxFramesPerSecond = 18 }, func(c Config) any { return c.MaxFrameRate }, 18},
		{"trust reported", func(c *config.Config) { c.AgentManagement.TrustReportedAttributes = true }, func(c Config) any { return c.TrustReported }, true},
		{"bootstrap cap", func(c *config.Config) { c.AgentManagement.BootstrapMaxAgents = 19 }, func(c Config) any { return c.BootstrapMaxAgents }, 19},
		{"reconnect backoff", func(c *config.Config) { c.AgentManagement.ReconnectBackoffMs = 1500 }, func(c Config) any { return c.ReconnectBackoff }, 1500 * time.Millisecond},
		{"reconnect attempts", func(c *config.Config) { c.AgentManagement.MaxReconnectAttempts = 7 }, func(c Config) any { return c.MaxReconnectAttempts }, 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.set(&cfg)
			require.Equal(t, tc.want, tc.got(ConfigFrom(cfg, "gw-1")))
		})
	}
	require.Equal(t, "gw-1", ConfigFrom(config.Default(), "gw-1").GatewayID)
}

// The role's own defaults are the shared configuration's: a Config left zero
// behaves as a binary started without configuration.
func TestConfigDefaultsAreTheSharedDefaults(t *testing.T) {
	zero := Config{GatewayID: "gw-1"}
	zero.setDefaults()
	from := ConfigFrom(config.Default(), "gw-1")
	require.Equal(t, from.HeartbeatInterval, zero.HeartbeatInterval)
	require.Equal(t, from.TelemetryInterval, zero.TelemetryInterval)
	require.Equal(t, from.MaxConnections, zero.MaxConnections)
	require.Equal(t, from.HandshakeTimeout, zero.HandshakeTimeout)
	require.Equal(t, from.FlushInterval, zero.FlushInterval)
	require.Equal(t, from.TelemetryBatch, zero.TelemetryBatch)
	require.Equal(t, from.Retry.Base, zero.Retry.Base)
	require.Equal(t, from.HelloTimeout, zero.HelloTimeout)
	require.Equal(t, from.MaxFrameRate, zero.MaxFrameRate)
}
