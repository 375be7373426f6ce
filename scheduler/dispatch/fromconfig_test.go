package dispatch

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
		{"retry delay", func(c *config.Config) { c.Command.RetryDelayMs = 250 }, func(c Config) any { return c.RetryDelay }, 250 * time.Millisecond},
		{"in flight", func(c *config.Config) { c.Command.MaxConcurrentCommands = 21 }, func(c Config) any { return c.MaxInFlight }, 21},
		{"per agent", func(c *config.Config) { c.Command.MaxPerAgent = 3 }, func(c Config) any { return c.PerAgent }, 3},
		{"batch size", func(c *config.Config) { c.Command.DispatchBatchSize = 22 }, func(c Config) any { return c.BatchSize }, 22},
		{"workers", func(c *config.Config) { c.Server.Workers = 6 }, func(c Config) any { return c.Workers }, 6},
		{"offline after", func(c *config.Config) { c.AgentManagement.HeartbeatInterval = 11; c.Telemetry.FlushInterval = 3 },
			func(c Config) any { return c.StaleAfter }, 3*11*time.Second + 3*time.Second},
		{"telemetry retention", func(c *config.Config) { c.Telemetry.RetentionDays = 2 }, func(c Config) any { return c.TelemetryRetention }, 48 * time.Hour},
		{"command retention", func(c *config.Config) { c.Command.HistoryRetentionDays = 3 }, func(c Config) any { return c.CommandRetention }, 72 * time.Hour},
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
	require.Equal(t, from.BatchSize, zero.BatchSize)
	require.Equal(t, from.Workers, zero.Workers)
	unset := ConfigFrom(config.Config{}) // server.workers 0: the default
	unset.setDefaults()
	require.Equal(t, config.DefaultWorkers, unset.Workers)
	require.Equal(t, from.RetryDelay, zero.RetryDelay)
	require.Equal(t, from.StaleAfter, zero.StaleAfter)
}
