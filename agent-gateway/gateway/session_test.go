package gateway_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// maskedFrame is a client's text frame (payload under 126 bytes) with a zero
// mask key, so several can be written to the socket at once.
func maskedFrame(payload string) []byte {
	return append([]byte{0x81, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// Frames that arrive together, so that the next ones sit in the session's read
// buffer while the first is handled, are all served: the session does not wait
// for the socket to become readable while a frame is buffered (also right
// after HELLO, read by the handshake).
func TestBufferedFramesServed(t *testing.T) {
	f := start(t, gateway.Config{})
	c := f.dial(t, f.enroll(t, "buffered-1"))
	var burst []byte
	for _, p := range []string{
		`{"type":"HELLO","payload":{"agent_id":"buffered-1","version":"1","hostname":"h"}}`,
		`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":1}}`,
		`{"type":"FIRST_UNKNOWN","payload":{}}`,
	} {
		burst = append(burst, maskedFrame(p)...)
	}
	_, err := c.NetConn().Write(burst)
	require.NoError(t, err)
	require.Equal(t, protocol.TypeWelcome, readWire(t, c).Type)
	w := readWire(t, c)
	require.Equal(t, protocol.TypeError, w.Type)
	require.Equal(t, "FIRST_UNKNOWN", w.Payload["frame_type"])

	burst = burst[:0]
	for _, p := range []string{
		`{"type":"HEARTBEAT","payload":{"status":"degraded","uptime_s":2}}`,
		`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":3}}`,
		`{"type":"SECOND_UNKNOWN","payload":{}}`,
	} {
		burst = append(burst, maskedFrame(p)...)
	}
	_, err = c.NetConn().Write(burst)
	require.NoError(t, err)
	w = readWire(t, c)
	require.Equal(t, protocol.TypeError, w.Type)
	require.Equal(t, "SECOND_UNKNOWN", w.Payload["frame_type"])
	require.Equal(t, float64(3), value(t, f.reg, "viworks_gateway_frames_received_total", "type=HEARTBEAT"))
}
