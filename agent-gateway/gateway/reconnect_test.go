package gateway_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
)

// WELCOME advertises the reconnect backoff (agent_management.
// reconnect_backoff_ms, max_reconnect_attempts); a gateway configured
// without one leaves the fields out, so agents keep their own.
func TestWelcomeAdvertisesReconnectBackoff(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  gateway.Config
		want map[string]any // nil: absent
	}{
		{"configured", gateway.Config{ReconnectBackoff: 1500 * time.Millisecond, MaxReconnectAttempts: 7},
			map[string]any{"reconnect_backoff_ms": 1500.0, "max_reconnect_attempts": 7.0}},
		{"seed defaults", gateway.Config{ReconnectBackoff: time.Second, MaxReconnectAttempts: 5},
			map[string]any{"reconnect_backoff_ms": 1000.0, "max_reconnect_attempts": 5.0}},
		{"not configured", gateway.Config{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, tc.cfg)
			_, welcome := f.session(t, "rc-1")
			for _, k := range []string{"reconnect_backoff_ms", "max_reconnect_attempts"} {
				v, ok := welcome[k]
				if tc.want == nil {
					require.False(t, ok, "%s advertised: %v", k, v)
					continue
				}
				require.Equal(t, tc.want[k], v, k)
			}
		})
	}
}
