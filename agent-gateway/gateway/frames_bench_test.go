package gateway_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// BenchmarkSessionFrames pushes frames through one agent's session on a real
// gateway (loopback WebSocket, Postgres, Redis): per op one frame read,
// decoded and handled, and what it costs the gateway's batches. allocs/op
// counts the whole process, the test's client included.
func BenchmarkSessionFrames(b *testing.B) {
	f := start(b, gateway.Config{MaxFrameRate: 1 << 20})
	c, _ := f.session(b, "bench-agent")
	// An unknown type is answered with an ERROR frame once every frame before
	// it has been handled: the end of a run.
	barrier := []byte(`{"type":"BENCH_BARRIER","payload":{}}`)
	flush := func(b *testing.B) {
		require.NoError(b, c.WriteMessage(websocket.TextMessage, barrier))
		w := readWire(b, c)
		require.Equal(b, protocol.TypeError, w.Type)
		require.Equal(b, protocol.ErrCodeUnknownType, w.Payload["code"])
	}
	b.Run("heartbeat", func(b *testing.B) {
		data := []byte(`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":12345,"running_commands":0}}`)
		b.ReportAllocs()
		for range b.N {
			require.NoError(b, c.WriteMessage(websocket.TextMessage, data))
		}
		flush(b)
	})
	b.Run("telemetry", func(b *testing.B) {
		data := []byte(`{"type":"TELEMETRY","payload":{"ts":"` + time.Now().UTC().Format(time.RFC3339Nano) +
			`","metrics":{"cpu_percent":12.5,"mem_used_bytes":1048576,"mem_percent":40.2,"load1":0.25,"disk_percent":71}}}`)
		b.ReportAllocs()
		for range b.N {
			require.NoError(b, c.WriteMessage(websocket.TextMessage, data))
		}
		flush(b)
	})
	b.Run("result", func(b *testing.B) {
		// Executions the store does not know: each result is looked up in
		// Postgres and answered unknown_execution.
		b.ReportAllocs()
		for i := range b.N {
			data := []byte(`{"type":"COMMAND_RESULT","payload":{"execution_id":"bench-` + strconv.Itoa(i) +
				`","status":"succeeded","exit_code":0,"output":"ok\n","started_at":"2025-03-04T05:06:07Z","finished_at":"2025-03-04T05:06:08.5Z"}}`)
			require.NoError(b, c.WriteMessage(websocket.TextMessage, data))
			w := readWire(b, c)
			require.Equal(b, protocol.TypeResultAck, w.Type)
		}
	})
}
