package gateway_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// An agent over its frame rate is slowed down, not disconnected: a burst of
// frames (as a busy gateway reads its backlog late) is read at the rate, every
// frame is handled and the session stays up.
func TestFrameRateThrottlesInsteadOfClosing(t *testing.T) {
	f := start(t, gateway.Config{MaxFrameRate: 100, FlushInterval: time.Hour})
	c, _ := f.session(t, "burst-1")
	const frames = 400 // twice the bucket
	for i := range frames {
		sendWire(t, c, protocol.TypeHeartbeat, map[string]any{"status": protocol.HealthHealthy, "uptime_s": i})
	}
	require.Eventually(t, func() bool {
		return value(t, f.reg, "viworks_gateway_frames_received_total", "type="+protocol.TypeHeartbeat) == frames
	}, 30*time.Second, 20*time.Millisecond)
	require.Positive(t, value(t, f.reg, "viworks_gateway_frames_throttled_total", ""))
	require.Equal(t, 0.0, value(t, f.reg, "viworks_gateway_sessions_dropped_total", "reason=rate_limited"))
	require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_sessions", ""), "the session is still up")
}
