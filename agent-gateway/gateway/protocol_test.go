package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

// These tests speak the wire protocol in plain JSON, as an agent written from
// docs/protocol.md alone would.

// wire is a frame as received, its payload left generic.
type wire struct {
	Type    string         `json:"type"`
	Payload map[string]any `json:"payload"`
}

func readWire(t testing.TB, c *websocket.Conn) wire {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := c.ReadMessage()
	require.NoError(t, err)
	var w wire
	require.NoError(t, json.Unmarshal(msg, &w), "%s", msg)
	return w
}

func sendWire(t testing.TB, c *websocket.Conn, typ string, payload any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"type": typ, "payload": payload})
	require.NoError(t, err)
	require.NoError(t, c.WriteMessage(websocket.TextMessage, b))
}

// session enrolls id, says HELLO (announcing echo) and returns the socket and
// the WELCOME payload.
func (f fixture) session(t testing.TB, id string) (*websocket.Conn, map[string]any) {
	t.Helper()
	c := f.dial(t, f.enroll(t, id))
	sendWire(t, c, protocol.TypeHello, map[string]any{"agent_id": id, "version": "1", "hostname": "h", "capabilities": []string{"echo"}})
	w := readWire(t, c)
	require.Equal(t, protocol.TypeWelcome, w.Type, "%v", w.Payload)
	return c, w.Payload
}

// dispatched creates an echo command for agent and marks its execution
// dispatched through this gateway, as a scheduler would; it returns the
// execution's id.
func (f fixture) dispatched(t *testing.T, agent string) string {
	t.Helper()
	ctx := context.Background()
	cmd, execs, err := f.store.CreateCommand(ctx, store.NewCommand{
		Verb: "echo", Priority: store.PriorityNormal, Args: store.JSON(`{}`), Targeting: store.Targeting{AgentIDs: []string{agent}},
		TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"},
	})
	require.NoError(t, err)
	require.Len(t, execs, 1)
	route := func(context.Context, []string) (map[string]string, error) {
		return map[string]string{agent: "gw-test"}, nil
	}
	due, _, err := f.store.ClaimDue(ctx, store.ClaimOptions{Limit: 10, AckTimeout: time.Minute}, route)
	require.NoError(t, err)
	for _, d := range due {
		if d.ExecutionID == execs[0].ID {
			commandOf[d.ExecutionID] = cmd.ID
			return d.ExecutionID
		}
	}
	t.Fatalf("execution %s was not dispatched", execs[0].ID)
	return ""
}

func result(execID, output string) map[string]any {
	return map[string]any{"execution_id": execID, "status": "succeeded", "exit_code": 0, "output": output,
		"started_at": time.Now().UTC().Format(time.RFC3339Nano), "finished_at": time.Now().UTC().Format(time.RFC3339Nano)}
}

// commandOf maps the executions dispatched by the tests to their commands.
var commandOf = map[string]string{}

func execution(t *testing.T, st *store.Store, id string) store.Execution {
	t.Helper()
	_, execs, err := st.GetCommand(context.Background(), commandOf[id])
	require.NoError(t, err)
	require.Len(t, execs, 1)
	return execs[0]
}

// A result larger than the output limit used to close the session (1008) on
// every re-send, locking the agent out for good. It is stored cut, marked,
// acknowledged, and the session carries on.
func TestOversizedResultStoredTruncated(t *testing.T) {
	f := start(t, gateway.Config{})
	c, welcome := f.session(t, "big-1")
	require.EqualValues(t, protocol.MaxOutputBytes, welcome["output_limit"])

	first := f.dispatched(t, "big-1")
	sendWire(t, c, protocol.TypeCommandResult, result(first, strings.Repeat("x", 200<<10)))
	ack := readWire(t, c)
	require.Equal(t, protocol.TypeResultAck, ack.Type, "%v", ack.Payload)
	require.Equal(t, first, ack.Payload["execution_id"])
	require.Equal(t, "stored", ack.Payload["outcome"])
	e := execution(t, f.store, first)
	require.Equal(t, store.ExecSucceeded, e.Status)
	require.True(t, e.OutputTruncated)
	require.LessOrEqual(t, len(e.Output), protocol.MaxOutputBytes)
	require.True(t, strings.HasSuffix(e.Output, protocol.TruncationMarker))

	second := f.dispatched(t, "big-1")
	sendWire(t, c, protocol.TypeCommandResult, result(second, "small"))
	ack = readWire(t, c)
	require.Equal(t, second, ack.Payload["execution_id"])
	require.Equal(t, "stored", ack.Payload["outcome"])
	e = execution(t, f.store, second)
	require.Equal(t, "small", e.Output)
	require.False(t, e.OutputTruncated)
}

// A field of the wrong type or value used to close the session; now the
// frame is answered with an ERROR naming the field and the session stays.
func TestBadFieldsKeepTheSession(t *testing.T) {
	f := start(t, gateway.Config{TelemetryBatch: 1})
	c, _ := f.session(t, "field-1")
	now := time.Now().UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name, typ string
		payload   any
		field     string
		message   string
	}{
		{"metric a string", protocol.TypeTelemetry, map[string]any{"ts": now, "metrics": map[string]any{"cpu_percent": "high"}},
			"payload.metrics.cpu_percent", "payload.metrics.cpu_percent: a number is required"},
		{"heartbeat status unknown", protocol.TypeHeartbeat, map[string]any{"status": "fine", "uptime_s": 3},
			"payload.status", "payload.status: must be healthy, degraded or unhealthy"},
		{"running_commands fractional", protocol.TypeHeartbeat, map[string]any{"status": "healthy", "running_commands": 1.5},
			"payload.running_commands", "payload.running_commands: an integer is required"},
		{"uptime a string", protocol.TypeHeartbeat, map[string]any{"status": "healthy", "uptime_s": "5"},
			"payload.uptime_s", "payload.uptime_s: an integer is required"},
		{"result status unknown", protocol.TypeCommandResult, map[string]any{"execution_id": "e-1", "status": "done"},
			"payload.status", "payload.status: must be succeeded or failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sendWire(t, c, tc.typ, tc.payload)
			w := readWire(t, c)
			require.Equal(t, protocol.TypeError, w.Type, "%v", w.Payload)
			require.Equal(t, tc.field, w.Payload["field"])
			require.Equal(t, tc.message, w.Payload["message"])
			require.Equal(t, tc.typ, w.Payload["frame_type"])
		})
	}
	// One bad metric costs only itself: the valid one of the frame is stored.
	sendWire(t, c, protocol.TypeTelemetry, map[string]any{"ts": now, "metrics": map[string]any{"cpu_percent": "high", "mem_percent": 40}})
	w := readWire(t, c)
	require.Equal(t, "payload.metrics.cpu_percent", w.Payload["field"])
	require.Eventually(t, func() bool {
		return value(t, f.reg, "viworks_gateway_telemetry_samples_stored_total", "") == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 2.0, value(t, f.reg, "viworks_gateway_telemetry_refused_total", "reason=invalid_value"))
	require.Equal(t, 0.0, value(t, f.reg, "viworks_gateway_sessions_closed_total", "reason=policy_violation"))
	require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_sessions", ""))
}

// TELEMETRY stamped far ahead (it would outlive retention) or long ago is
// refused, counted, and not stored.
func TestTelemetryTimestampWindow(t *testing.T) {
	f := start(t, gateway.Config{TelemetryBatch: 1})
	c, _ := f.session(t, "ts-1")
	for _, ts := range []time.Time{time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC), time.Now().Add(-2 * time.Hour), time.Now().Add(10 * time.Minute)} {
		sendWire(t, c, protocol.TypeTelemetry, map[string]any{"ts": ts.Format(time.RFC3339), "metrics": map[string]any{"cpu_percent": 1}})
		w := readWire(t, c)
		require.Equal(t, protocol.TypeError, w.Type, "%v", w.Payload)
		require.Equal(t, "ts_out_of_window", w.Payload["code"])
		require.Equal(t, "payload.ts", w.Payload["field"])
	}
	sendWire(t, c, protocol.TypeTelemetry, map[string]any{"ts": time.Now().UTC().Format(time.RFC3339Nano), "metrics": map[string]any{"cpu_percent": 1}})
	require.Eventually(t, func() bool {
		return value(t, f.reg, "viworks_gateway_telemetry_samples_stored_total", "") == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 3.0, value(t, f.reg, "viworks_gateway_telemetry_refused_total", "reason=ts_out_of_window"))
}

// RESULT_ACK says what became of the result, and the outcomes are counted.
func TestResultAckOutcomes(t *testing.T) {
	f := start(t, gateway.Config{})
	c, _ := f.session(t, "out-a")
	other, _ := f.session(t, "out-b")
	mine := f.dispatched(t, "out-a")
	theirs := f.dispatched(t, "out-b")
	for _, tc := range []struct {
		name, execID, outcome string
	}{
		{"stored", mine, "stored"},
		{"duplicate", mine, "duplicate"},
		{"unknown execution", "made-up-execution", "unknown_execution"},
		{"another agent's execution", theirs, "not_yours"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sendWire(t, c, protocol.TypeCommandResult, result(tc.execID, "out"))
			w := readWire(t, c)
			require.Equal(t, protocol.TypeResultAck, w.Type, "%v", w.Payload)
			require.Equal(t, tc.execID, w.Payload["execution_id"])
			require.Equal(t, tc.outcome, w.Payload["outcome"])
			require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_result_acks_total", "outcome="+tc.outcome))
		})
	}
	// The other agent's execution is untouched and still takes its own result.
	require.Equal(t, store.ExecDispatched, execution(t, f.store, theirs).Status)
	sendWire(t, other, protocol.TypeCommandResult, result(theirs, "theirs"))
	require.Equal(t, "stored", readWire(t, other).Payload["outcome"])
}

// A socket that never says HELLO used to stay open (until the connection
// timeout, then closed as normal); it is closed with 1008 after HelloTimeout.
func TestHelloDeadline(t *testing.T) {
	f := start(t, gateway.Config{HelloTimeout: 300 * time.Millisecond})
	c := f.dial(t, f.enroll(t, "silent-1"))
	began := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := c.ReadMessage()
	require.True(t, websocket.IsCloseError(err, protocol.ClosePolicyViolation), "got %v", err)
	require.Less(t, time.Since(began), 5*time.Second)
	require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_sessions_closed_total", "reason=hello_timeout"))
}

// Agent ids outside the safe alphabet are refused at enrollment and in HELLO:
// a right-to-left override disguises an id in a terminal, a path escapes a
// directory, and a lone surrogate becomes U+FFFD, so two ids collapse into one.
func TestUnsafeAgentIDsRefused(t *testing.T) {
	f := start(t, gateway.Config{})
	bad := map[string]string{
		"right-to-left override": `"gw\u202e1"`,
		"path traversal":         `"../../etc"`,
		"lone surrogate":         `"gw\ud800"`,
		"only dots":              `".."`,
	}
	for name, raw := range bad {
		t.Run("enroll "+name, func(t *testing.T) {
			body := `{"enrollment_secret":"` + secret + `","agent_id":` + raw + `}`
			resp, err := http.Post(f.srv.URL+"/agent/v1/enroll", "application/json", bytes.NewReader([]byte(body)))
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode)
		})
		t.Run("hello "+name, func(t *testing.T) {
			c := f.dial(t, f.enroll(t, "ok-agent-"+strings.ReplaceAll(name, " ", "-")))
			hello := `{"type":"HELLO","payload":{"agent_id":` + raw + `}}`
			require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(hello)))
			w := readWire(t, c)
			require.Equal(t, protocol.TypeError, w.Type)
			require.Equal(t, "invalid_payload", w.Payload["code"])
			require.Equal(t, "payload.agent_id", w.Payload["field"])
			_, _, err := c.ReadMessage()
			require.True(t, websocket.IsCloseError(err, protocol.ClosePolicyViolation), "got %v", err)
		})
	}
}

// The protocol version is negotiated: none offered is version 1; none in
// common closes with 1008 and an ERROR naming the supported versions.
func TestProtocolVersionNegotiation(t *testing.T) {
	f := start(t, gateway.Config{})
	_, welcome := f.session(t, "ver-1")
	require.EqualValues(t, 1, welcome["protocol_version"])

	c := f.dial(t, f.enroll(t, "ver-2"))
	sendWire(t, c, protocol.TypeHello, map[string]any{"agent_id": "ver-2", "protocol_versions": []int{1, 2}})
	w := readWire(t, c)
	require.EqualValues(t, 1, w.Payload["protocol_version"])

	c = f.dial(t, f.enroll(t, "ver-3"))
	sendWire(t, c, protocol.TypeHello, map[string]any{"agent_id": "ver-3", "protocol_versions": []int{7}})
	w = readWire(t, c)
	require.Equal(t, protocol.TypeError, w.Type)
	require.Equal(t, "unsupported_version", w.Payload["code"])
	require.Contains(t, w.Payload["message"], "speaks 1")
	_, _, err := c.ReadMessage()
	require.True(t, websocket.IsCloseError(err, protocol.ClosePolicyViolation), "got %v", err)
}
