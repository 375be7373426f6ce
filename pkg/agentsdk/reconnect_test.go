package agentsdk

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// A gateway's WELCOME sets the reconnect backoff: the first delay is
// reconnect_backoff_ms, doubling for max_reconnect_attempts reconnects, then
// staying at the longest (the agent never gives up); MaxBackoff still caps it.
func TestReconnectBackoffFromWelcome(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, n := range v {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		welcome  protocol.Welcome
		maxD     time.Duration
		ceilings []time.Duration // by attempt, from 0
	}{
		{"seed defaults: 1s, 5 attempts", protocol.Welcome{ReconnectBackoffMs: 1000, MaxReconnectAttempts: 5}, 30 * time.Second,
			ms(1000, 2000, 4000, 8000, 16000, 16000, 16000, 16000)},
		{"one attempt: never doubles", protocol.Welcome{ReconnectBackoffMs: 300, MaxReconnectAttempts: 1}, 30 * time.Second,
			ms(300, 300, 300)},
		{"zero attempts: every retry waits the base", protocol.Welcome{ReconnectBackoffMs: 250}, 30 * time.Second,
			ms(250, 250, 250)},
		{"capped by MaxBackoff", protocol.Welcome{ReconnectBackoffMs: 1000, MaxReconnectAttempts: 10}, 3 * time.Second,
			ms(1000, 2000, 3000, 3000, 3000)},
		{"not advertised (older gateway): MinBackoff doubling to MaxBackoff", protocol.Welcome{MaxReconnectAttempts: 2}, 1 * time.Second,
			ms(100, 200, 400, 800, 1000, 1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := reconnectFrom(&tc.welcome)
			for attempt, ceil := range tc.ceilings {
				t.Run(fmt.Sprint("attempt ", attempt), func(t *testing.T) {
					var top time.Duration
					for range 300 {
						d := backoff(100*time.Millisecond, tc.maxD, p, attempt)
						require.GreaterOrEqual(t, d, time.Duration(0))
						require.LessOrEqual(t, d, ceil)
						top = max(top, d)
					}
					require.Greater(t, top, ceil/2, "jitter spreads over the whole range up to the ceiling")
				})
			}
			require.LessOrEqual(t, backoff(100*time.Millisecond, tc.maxD, p, 1<<20), tc.maxD, "a very late attempt still waits at most MaxBackoff")
		})
	}
}
