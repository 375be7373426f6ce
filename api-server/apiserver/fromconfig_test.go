package apiserver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/ratelimit"
)

func TestConfigFromMapsTheSharedConfiguration(t *testing.T) {
	cases := []struct {
		name string
		set  func(*config.Config)
		got  func(Config) any
		want any
	}{
		{"command timeout", func(c *config.Config) { c.Command.CommandTimeout = 7 }, func(c Config) any { return c.DefaultTimeout }, 7 * time.Second},
		{"retry attempts", func(c *config.Config) { c.Command.RetryAttempts = 5 }, func(c Config) any { return c.DefaultMaxRetries }, 5},
		{"queue size", func(c *config.Config) { c.Command.MaxCommandQueueSize = 77 }, func(c Config) any { return c.MaxQueued }, 77},
		{"heartbeat", func(c *config.Config) { c.AgentManagement.HeartbeatInterval = 11 }, func(c Config) any { return c.HeartbeatInterval }, 11 * time.Second},
		{"stale after", func(c *config.Config) { c.AgentManagement.HeartbeatInterval = 11; c.Telemetry.FlushInterval = 3 },
			func(c Config) any { return c.StaleAfter }, 2*11*time.Second + 3*time.Second},
		{"rate limit", func(c *config.Config) { c.Security.RateLimitRequests = 9; c.Security.RateLimitWindow = 4 },
			func(c Config) any { return c.RateLimit }, ratelimit.Limit{Requests: 9, Window: 4 * time.Second}},
		{"trusted proxies", func(c *config.Config) { c.Security.TrustedProxies = []string{"10.0.0.0/8"} },
			func(c Config) any { return c.TrustedProxies }, []string{"10.0.0.0/8"}},
		{"event streams", func(c *config.Config) { c.Server.MaxEventStreamsPerPrincipal = 6 }, func(c Config) any { return c.Events.MaxPerOwner }, 6},
		{"in-flight bound", func(c *config.Config) { c.Server.MaxConnections = 3 }, func(c Config) any { return c.MaxInFlight }, 3},
		{"request timeout", func(c *config.Config) { c.Server.RequestTimeout = 4 }, func(c Config) any { return c.RequestTimeout }, 4 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.set(&cfg)
			require.Equal(t, tc.want, tc.got(ConfigFrom(cfg)))
		})
	}
}

// The role's own defaults are the shared configuration's: a Config left zero
// behaves as a binary started without configuration.
func TestConfigDefaultsAreTheSharedDefaults(t *testing.T) {
	var zero Config
	zero.setDefaults()
	from := ConfigFrom(config.Default())
	require.Equal(t, from.DefaultTimeout, zero.DefaultTimeout)
	require.Equal(t, from.HeartbeatInterval, zero.HeartbeatInterval)
	require.Equal(t, from.StaleAfter, zero.StaleAfter)
	require.Equal(t, from.Events.MaxPerOwner, zero.Events.MaxPerOwner)
	require.Equal(t, from.MaxInFlight, zero.MaxInFlight)
	require.Equal(t, from.RequestTimeout, zero.RequestTimeout)
}
