package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// rawFrame builds an agent frame with the payload given as raw JSON text.
func rawFrame(typ, payload string) []byte {
	return []byte(`{"type":"` + typ + `","payload":` + payload + `}`)
}

// objFrame builds an agent frame whose payload is v marshalled to JSON.
func objFrame(t testing.TB, typ string, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return rawFrame(typ, string(b))
}

func manyStrings(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func numbered(prefix string) func(int) string {
	return func(i int) string { return prefix + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + itoa(i) }
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

var (
	ts1 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	ts2 = time.Date(2025, 3, 4, 5, 6, 9, 500_000_000, time.UTC)
)

func TestDecodeValid(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		typ    string
		id     string
		expect any
	}{
		{
			name: "hello full",
			data: []byte(`{"type":"HELLO","id":"f-1","payload":{"agent_id":"gateway-001","site":"production","version":"1.2.3",` +
				`"capabilities":["create_user","restart"],"labels":{"role":"gateway"},"hostname":"gw1","os":"linux","arch":"amd64"}}`),
			typ: TypeHello, id: "f-1",
			expect: &Hello{AgentID: "gateway-001", Site: "production", Version: "1.2.3", Capabilities: []string{"create_user", "restart"},
				Labels: map[string]string{"role": "gateway"}, Hostname: "gw1", OS: "linux", Arch: "amd64"},
		},
		{
			name: "hello minimal", data: rawFrame(TypeHello, `{"agent_id":"a"}`), typ: TypeHello,
			expect: &Hello{AgentID: "a"},
		},
		{
			name: "hello agent_id of exactly MaxIDLen bytes", data: rawFrame(TypeHello, `{"agent_id":"`+strings.Repeat("a", MaxIDLen)+`"}`), typ: TypeHello,
			expect: &Hello{AgentID: strings.Repeat("a", MaxIDLen)},
		},
		{
			name: "hello limits exactly reached",
			data: objFrame(t, TypeHello, map[string]any{
				"agent_id":     "a",
				"site":         strings.Repeat("s", MaxShortFieldLen),
				"capabilities": manyStrings(MaxCapabilities, numbered("c")),
				"labels": func() map[string]string {
					m := map[string]string{}
					for _, k := range manyStrings(MaxLabels, numbered("k")) {
						m[k] = strings.Repeat("v", MaxShortFieldLen)
					}
					return m
				}(),
			}),
			typ: TypeHello,
			expect: func() any {
				labels := map[string]string{}
				for _, k := range manyStrings(MaxLabels, numbered("k")) {
					labels[k] = strings.Repeat("v", MaxShortFieldLen)
				}
				return &Hello{AgentID: "a", Site: strings.Repeat("s", MaxShortFieldLen), Capabilities: manyStrings(MaxCapabilities, numbered("c")), Labels: labels}
			}(),
		},
		{
			name: "heartbeat healthy", data: rawFrame(TypeHeartbeat, `{"status":"healthy","uptime_s":12,"running_commands":3}`), typ: TypeHeartbeat,
			expect: &Heartbeat{Status: HealthHealthy, UptimeS: 12, RunningCommands: 3},
		},
		{
			name: "heartbeat degraded zero uptime", data: rawFrame(TypeHeartbeat, `{"status":"degraded","uptime_s":0}`), typ: TypeHeartbeat,
			expect: &Heartbeat{Status: HealthDegraded},
		},
		{
			name: "heartbeat unhealthy max running", data: rawFrame(TypeHeartbeat, `{"status":"unhealthy","running_commands":`+itoa(MaxRunningCommands)+`}`), typ: TypeHeartbeat,
			expect: &Heartbeat{Status: HealthUnhealthy, RunningCommands: MaxRunningCommands},
		},
		{
			name: "telemetry", data: rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z","metrics":{"cpu_percent":12.5,"mem_used_bytes":1048576,"load1":0.25,"custom":-1}}`),
			typ:    TypeTelemetry,
			expect: &Telemetry{TS: ts1, Metrics: map[string]float64{"cpu_percent": 12.5, "mem_used_bytes": 1048576, "load1": 0.25, "custom": -1}},
		},
		{
			name: "telemetry MaxMetrics entries",
			data: objFrame(t, TypeTelemetry, map[string]any{"ts": ts1, "metrics": func() map[string]float64 {
				m := map[string]float64{}
				for _, k := range manyStrings(MaxMetrics, numbered("m")) {
					m[k] = 1
				}
				return m
			}()}),
			typ: TypeTelemetry,
			expect: &Telemetry{TS: ts1, Metrics: func() map[string]float64 {
				m := map[string]float64{}
				for _, k := range manyStrings(MaxMetrics, numbered("m")) {
					m[k] = 1
				}
				return m
			}()},
		},
		{
			name: "ack received", data: rawFrame(TypeAck, `{"execution_id":"e-1","state":"received"}`), typ: TypeAck,
			expect: &Ack{ExecutionID: "e-1", State: AckReceived},
		},
		{
			name: "ack started", data: rawFrame(TypeAck, `{"execution_id":"e-1","state":"started"}`), typ: TypeAck,
			expect: &Ack{ExecutionID: "e-1", State: AckStarted},
		},
		{
			name: "result succeeded",
			data: rawFrame(TypeCommandResult, `{"execution_id":"e-1","command_id":"c-1","status":"succeeded","exit_code":0,"output":"ok",`+
				`"started_at":"2025-03-04T05:06:07Z","finished_at":"2025-03-04T05:06:09.5Z"}`),
			typ:    TypeCommandResult,
			expect: &CommandResult{ExecutionID: "e-1", CommandID: "c-1", Status: ResultSucceeded, Output: "ok", StartedAt: ts1, FinishedAt: ts2},
		},
		{
			name: "result failed without command_id", data: rawFrame(TypeCommandResult, `{"execution_id":"e-1","status":"failed","exit_code":2,"error":"boom"}`),
			typ: TypeCommandResult, expect: &CommandResult{ExecutionID: "e-1", Status: ResultFailed, ExitCode: 2, Error: "boom"},
		},
		{
			name: "result output and error at their limits",
			data: objFrame(t, TypeCommandResult, map[string]any{"execution_id": "e", "status": "failed",
				"output": strings.Repeat("o", MaxOutputBytes), "error": strings.Repeat("e", MaxErrorBytes)}),
			typ:    TypeCommandResult,
			expect: &CommandResult{ExecutionID: "e", Status: ResultFailed, Output: strings.Repeat("o", MaxOutputBytes), Error: strings.Repeat("e", MaxErrorBytes)},
		},
		{
			name: "unknown fields ignored at both levels",
			data: []byte(`{"type":"ACK","id":"x","extra":{"deep":[1,2]},"payload":{"execution_id":"e-1","state":"started","future_field":true}}`),
			typ:  TypeAck, id: "x",
			expect: &Ack{ExecutionID: "e-1", State: AckStarted},
		},
		{
			name: "envelope id of exactly MaxIDLen", data: []byte(`{"type":"ACK","id":"` + strings.Repeat("i", MaxIDLen) + `","payload":{"execution_id":"e","state":"received"}}`),
			typ: TypeAck, id: strings.Repeat("i", MaxIDLen), expect: &Ack{ExecutionID: "e", State: AckReceived},
		},
		{
			name: "surrounding whitespace", data: []byte(" \n\t{\"type\":\"ACK\",\"payload\":{\"execution_id\":\"e\",\"state\":\"received\"}}\r\n"),
			typ: TypeAck, expect: &Ack{ExecutionID: "e", State: AckReceived},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(tc.data)
			require.NoError(t, err)
			require.Equal(t, tc.typ, f.Type)
			require.Equal(t, tc.id, f.ID)
			require.Equal(t, tc.expect, f.Payload)
		})
	}
}

// refused is the close code of a frame that is only refused, not closed on.
const refused = 0

func TestDecodeRejects(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name  string
		data  []byte
		code  int
		field string // "" when the error names no field
		typ   string // Frame.Type expected alongside the error
	}{
		// 1007: not UTF-8, not JSON.
		{name: "empty input", data: []byte(``), code: CloseInvalidPayload},
		{name: "malformed JSON", data: []byte(`{"type":"HELLO",`), code: CloseInvalidPayload},
		{name: "not JSON at all", data: []byte(`hello there`), code: CloseInvalidPayload},
		{name: "JSON array", data: []byte(`[1,2]`), code: CloseInvalidPayload},
		{name: "JSON string", data: []byte(`"HELLO"`), code: CloseInvalidPayload},
		{name: "trailing garbage", data: []byte(`{"type":"ACK","payload":{"execution_id":"e","state":"received"}} x`), code: CloseInvalidPayload},
		{name: "type not a string", data: []byte(`{"type":1,"payload":{}}`), code: CloseInvalidPayload},
		{name: "id not a string", data: []byte(`{"type":"ACK","id":7,"payload":{}}`), code: CloseInvalidPayload},
		{name: "invalid UTF-8 in payload", data: []byte("{\"type\":\"HELLO\",\"payload\":{\"agent_id\":\"a\xff\"}}"), code: CloseInvalidPayload},
		{name: "invalid UTF-8 outside strings", data: []byte("\xc3\x28"), code: CloseInvalidPayload},
		{name: "truncated UTF-8 sequence", data: []byte("{\"type\":\"HELLO\",\"payload\":{\"agent_id\":\"\xe2\x82\"}}"), code: CloseInvalidPayload},
		{name: "payload a number", data: rawFrame(TypeHeartbeat, `5`), code: refused, field: "payload", typ: TypeHeartbeat},
		{name: "payload a string", data: rawFrame(TypeHello, `"agent"`), code: refused, field: "payload", typ: TypeHello},
		{name: "payload an array", data: rawFrame(TypeAck, `[]`), code: refused, field: "payload", typ: TypeAck},
		{name: "uptime a string", data: rawFrame(TypeHeartbeat, `{"status":"healthy","uptime_s":"5"}`), code: refused, field: "payload.uptime_s", typ: TypeHeartbeat},
		{name: "uptime fractional", data: rawFrame(TypeHeartbeat, `{"status":"healthy","uptime_s":1.5}`), code: refused, field: "payload.uptime_s", typ: TypeHeartbeat},
		{name: "capabilities not a list", data: rawFrame(TypeHello, `{"agent_id":"a","capabilities":"x"}`), code: refused, field: "payload.capabilities", typ: TypeHello},
		{name: "metric not numeric", data: rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z","metrics":{"cpu":"high"}}`), code: refused, field: "payload.metrics.cpu", typ: TypeTelemetry},
		{name: "metric out of float range", data: rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z","metrics":{"cpu":1e400}}`), code: refused, field: "payload.metrics.cpu", typ: TypeTelemetry},
		{name: "ts not RFC 3339", data: rawFrame(TypeTelemetry, `{"ts":"yesterday","metrics":{"cpu":1}}`), code: refused, field: "payload.ts", typ: TypeTelemetry},
		{name: "exit_code a bool", data: rawFrame(TypeCommandResult, `{"execution_id":"e","status":"failed","exit_code":true}`), code: refused, field: "payload.exit_code", typ: TypeCommandResult},

		// Refused (ERROR frame, session stays): payload types, envelope rules.
		{name: "missing type", data: []byte(`{"payload":{"agent_id":"a"}}`), code: refused, field: "type"},
		{name: "empty type", data: []byte(`{"type":"","payload":{"agent_id":"a"}}`), code: refused, field: "type"},
		{name: "JSON null frame", data: []byte(`null`), code: refused, field: "type"},
		{name: "empty object", data: []byte(`{}`), code: refused, field: "type"},
		{name: "id too long", data: []byte(`{"type":"ACK","id":"` + long(MaxIDLen+1) + `","payload":{"execution_id":"e","state":"received"}}`), code: refused, field: "id", typ: TypeAck},
		{name: "missing payload", data: []byte(`{"type":"HEARTBEAT"}`), code: refused, field: "payload", typ: TypeHeartbeat},
		{name: "null payload", data: rawFrame(TypeHello, `null`), code: refused, field: "payload", typ: TypeHello},

		// 1008: HELLO.
		{name: "hello agent_id missing", data: rawFrame(TypeHello, `{}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id empty", data: rawFrame(TypeHello, `{"agent_id":""}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id too long", data: rawFrame(TypeHello, `{"agent_id":"`+long(MaxIDLen+1)+`"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id multibyte too long", data: rawFrame(TypeHello, `{"agent_id":"`+strings.Repeat("é", MaxIDLen/2+1)+`"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id with space", data: rawFrame(TypeHello, `{"agent_id":"gw 1"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id with tab", data: rawFrame(TypeHello, `{"agent_id":"gw\t1"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id with newline", data: rawFrame(TypeHello, `{"agent_id":"gw1\n"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id with NUL", data: rawFrame(TypeHello, `{"agent_id":"gw\u00001"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id right-to-left override", data: rawFrame(TypeHello, `{"agent_id":"gw\u202e1"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id path traversal", data: rawFrame(TypeHello, `{"agent_id":"../../etc"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id lone surrogate", data: rawFrame(TypeHello, `{"agent_id":"gw\ud800"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id only dots", data: rawFrame(TypeHello, `{"agent_id":".."}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello agent_id slash", data: rawFrame(TypeHello, `{"agent_id":"a/b"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello protocol_versions not integers", data: rawFrame(TypeHello, `{"agent_id":"a","protocol_versions":["1"]}`), code: refused, field: "payload.protocol_versions", typ: TypeHello},
		{name: "hello protocol_versions zero", data: rawFrame(TypeHello, `{"agent_id":"a","protocol_versions":[0]}`), code: refused, field: "payload.protocol_versions", typ: TypeHello},
		{name: "heartbeat running_commands fractional", data: rawFrame(TypeHeartbeat, `{"status":"healthy","running_commands":1.5}`), code: refused, field: "payload.running_commands", typ: TypeHeartbeat},
		{name: "hello agent_id with DEL", data: rawFrame(TypeHello, `{"agent_id":"gw\u007f"}`), code: refused, field: "payload.agent_id", typ: TypeHello},
		{name: "hello site too long", data: rawFrame(TypeHello, `{"agent_id":"a","site":"`+long(MaxShortFieldLen+1)+`"}`), code: refused, field: "payload.site", typ: TypeHello},
		{name: "hello version too long", data: rawFrame(TypeHello, `{"agent_id":"a","version":"`+long(MaxShortFieldLen+1)+`"}`), code: refused, field: "payload.version", typ: TypeHello},
		{name: "hello hostname too long", data: rawFrame(TypeHello, `{"agent_id":"a","hostname":"`+long(MaxShortFieldLen+1)+`"}`), code: refused, field: "payload.hostname", typ: TypeHello},
		{name: "hello os too long", data: rawFrame(TypeHello, `{"agent_id":"a","os":"`+long(MaxShortFieldLen+1)+`"}`), code: refused, field: "payload.os", typ: TypeHello},
		{name: "hello arch too long", data: rawFrame(TypeHello, `{"agent_id":"a","arch":"`+long(MaxShortFieldLen+1)+`"}`), code: refused, field: "payload.arch", typ: TypeHello},
		{name: "hello too many capabilities", data: objFrame(t, TypeHello, map[string]any{"agent_id": "a", "capabilities": manyStrings(MaxCapabilities+1, numbered("c"))}), code: refused, field: "payload.capabilities", typ: TypeHello},
		{name: "hello empty capability", data: rawFrame(TypeHello, `{"agent_id":"a","capabilities":["ok",""]}`), code: refused, field: "payload.capabilities", typ: TypeHello},
		{name: "hello capability too long", data: rawFrame(TypeHello, `{"agent_id":"a","capabilities":["`+long(MaxShortFieldLen+1)+`"]}`), code: refused, field: "payload.capabilities", typ: TypeHello},
		{name: "hello too many labels", data: objFrame(t, TypeHello, map[string]any{"agent_id": "a", "labels": func() map[string]string {
			m := map[string]string{}
			for _, k := range manyStrings(MaxLabels+1, numbered("k")) {
				m[k] = "v"
			}
			return m
		}()}), code: refused, field: "payload.labels", typ: TypeHello},
		{name: "hello empty label key", data: rawFrame(TypeHello, `{"agent_id":"a","labels":{"":"v"}}`), code: refused, field: "payload.labels", typ: TypeHello},
		{name: "hello label key too long", data: rawFrame(TypeHello, `{"agent_id":"a","labels":{"`+long(MaxShortFieldLen+1)+`":"v"}}`), code: refused, field: "payload.labels", typ: TypeHello},
		{name: "hello label value too long", data: rawFrame(TypeHello, `{"agent_id":"a","labels":{"k":"`+long(MaxShortFieldLen+1)+`"}}`), code: refused, field: "payload.labels", typ: TypeHello},

		// 1008: HEARTBEAT.
		{name: "heartbeat status missing", data: rawFrame(TypeHeartbeat, `{"uptime_s":1}`), code: refused, field: "payload.status", typ: TypeHeartbeat},
		{name: "heartbeat status unknown", data: rawFrame(TypeHeartbeat, `{"status":"ok"}`), code: refused, field: "payload.status", typ: TypeHeartbeat},
		{name: "heartbeat status wrong case", data: rawFrame(TypeHeartbeat, `{"status":"Healthy"}`), code: refused, field: "payload.status", typ: TypeHeartbeat},
		{name: "heartbeat negative uptime", data: rawFrame(TypeHeartbeat, `{"status":"healthy","uptime_s":-1}`), code: refused, field: "payload.uptime_s", typ: TypeHeartbeat},
		{name: "heartbeat negative running", data: rawFrame(TypeHeartbeat, `{"status":"healthy","running_commands":-1}`), code: refused, field: "payload.running_commands", typ: TypeHeartbeat},
		{name: "heartbeat running too large", data: rawFrame(TypeHeartbeat, `{"status":"healthy","running_commands":`+itoa(MaxRunningCommands+1)+`}`), code: refused, field: "payload.running_commands", typ: TypeHeartbeat},

		// 1008: TELEMETRY.
		{name: "telemetry ts missing", data: rawFrame(TypeTelemetry, `{"metrics":{"cpu":1}}`), code: refused, field: "payload.ts", typ: TypeTelemetry},
		{name: "telemetry ts zero", data: rawFrame(TypeTelemetry, `{"ts":"0001-01-01T00:00:00Z","metrics":{"cpu":1}}`), code: refused, field: "payload.ts", typ: TypeTelemetry},
		{name: "telemetry metrics missing", data: rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z"}`), code: refused, field: "payload.metrics", typ: TypeTelemetry},
		{name: "telemetry metrics empty", data: rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z","metrics":{}}`), code: refused, field: "payload.metrics", typ: TypeTelemetry},
		{name: "telemetry too many metrics", data: objFrame(t, TypeTelemetry, map[string]any{"ts": ts1, "metrics": func() map[string]float64 {
			m := map[string]float64{}
			for _, k := range manyStrings(MaxMetrics+1, numbered("m")) {
				m[k] = 1
			}
			return m
		}()}), code: refused, field: "payload.metrics", typ: TypeTelemetry},
		{name: "telemetry empty metric name", data: rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z","metrics":{"":1}}`), code: refused, field: "payload.metrics", typ: TypeTelemetry},
		{name: "telemetry metric name too long", data: rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z","metrics":{"`+long(MaxShortFieldLen+1)+`":1}}`), code: refused, field: "payload.metrics", typ: TypeTelemetry},

		// 1008: ACK.
		{name: "ack execution_id missing", data: rawFrame(TypeAck, `{"state":"received"}`), code: refused, field: "payload.execution_id", typ: TypeAck},
		{name: "ack execution_id whitespace", data: rawFrame(TypeAck, `{"execution_id":"e 1","state":"received"}`), code: refused, field: "payload.execution_id", typ: TypeAck},
		{name: "ack execution_id too long", data: rawFrame(TypeAck, `{"execution_id":"`+long(MaxIDLen+1)+`","state":"received"}`), code: refused, field: "payload.execution_id", typ: TypeAck},
		{name: "ack state missing", data: rawFrame(TypeAck, `{"execution_id":"e"}`), code: refused, field: "payload.state", typ: TypeAck},
		{name: "ack state unknown", data: rawFrame(TypeAck, `{"execution_id":"e","state":"finished"}`), code: refused, field: "payload.state", typ: TypeAck},

		// 1008: COMMAND_RESULT.
		{name: "result execution_id missing", data: rawFrame(TypeCommandResult, `{"status":"succeeded"}`), code: refused, field: "payload.execution_id", typ: TypeCommandResult},
		{name: "result execution_id control char", data: rawFrame(TypeCommandResult, `{"execution_id":"e\u0001","status":"succeeded"}`), code: refused, field: "payload.execution_id", typ: TypeCommandResult},
		{name: "result command_id whitespace", data: rawFrame(TypeCommandResult, `{"execution_id":"e","command_id":"c 1","status":"succeeded"}`), code: refused, field: "payload.command_id", typ: TypeCommandResult},
		{name: "result command_id too long", data: rawFrame(TypeCommandResult, `{"execution_id":"e","command_id":"`+long(MaxIDLen+1)+`","status":"succeeded"}`), code: refused, field: "payload.command_id", typ: TypeCommandResult},
		{name: "result status missing", data: rawFrame(TypeCommandResult, `{"execution_id":"e"}`), code: refused, field: "payload.status", typ: TypeCommandResult},
		{name: "result status unknown", data: rawFrame(TypeCommandResult, `{"execution_id":"e","status":"timed_out"}`), code: refused, field: "payload.status", typ: TypeCommandResult},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(tc.data)
			require.Error(t, err)
			require.NotErrorIs(t, err, ErrUnknownType)
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			require.Equal(t, tc.code, de.CloseCode, "error: %v", err)
			require.Equal(t, tc.field, de.Field, "error: %v", err)
			require.NotEmpty(t, de.Reason)
			require.Nil(t, f.Payload)
			require.Equal(t, tc.typ, f.Type)
			if tc.field != "" {
				require.True(t, strings.HasPrefix(de.Error(), tc.field+": "), "error text %q names the field", de.Error())
			}
		})
	}
}

// Too long a result text is stored cut with a marker, never refused: the
// agent would re-send a refused result after every reconnect.
func TestDecodeTruncatesResultTexts(t *testing.T) {
	for _, tc := range []struct {
		name, output, errText string
		truncated             bool
	}{
		{"200 KiB output", strings.Repeat("o", 200<<10), "", true},
		{"output at the limit", strings.Repeat("o", MaxOutputBytes), "", false},
		{"multibyte output", strings.Repeat("é", MaxOutputBytes), "", true},
		{"long error", "", strings.Repeat("e", MaxErrorBytes+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(objFrame(t, TypeCommandResult, map[string]any{"execution_id": "e", "status": "failed", "output": tc.output, "error": tc.errText}))
			require.NoError(t, err)
			r := f.Payload.(*CommandResult)
			require.Equal(t, tc.truncated, r.OutputTruncated)
			require.LessOrEqual(t, len(r.Output), MaxOutputBytes)
			require.LessOrEqual(t, len(r.Error), MaxErrorBytes)
			require.True(t, utf8.ValidString(r.Output))
			if tc.truncated {
				require.True(t, strings.HasSuffix(r.Output, TruncationMarker))
			}
			if len(tc.errText) > MaxErrorBytes {
				require.True(t, strings.HasSuffix(r.Error, TruncationMarker))
			}
		})
	}
}

// One metric that is not a number is dropped and named; the others are kept.
func TestDecodeTelemetryDropsBadMetrics(t *testing.T) {
	f, err := Decode(rawFrame(TypeTelemetry, `{"ts":"2025-03-04T05:06:07Z","metrics":{"cpu_percent":"high","mem_percent":40,"load":[1]}}`))
	require.NoError(t, err)
	require.Equal(t, map[string]float64{"mem_percent": 40}, f.Payload.(*Telemetry).Metrics)
	require.Len(t, f.Dropped, 2)
	require.Equal(t, "payload.metrics.cpu_percent: a number is required", f.Dropped[0].Error())
	require.Equal(t, "payload.metrics.load", f.Dropped[1].Field)
}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		offered []int
		want    int
		ok      bool
	}{
		{nil, 1, true},
		{[]int{1}, 1, true},
		{[]int{1, 7}, 1, true},
		{[]int{7, 9}, 0, false},
	} {
		v, ok := Negotiate(tc.offered)
		require.Equal(t, tc.ok, ok, "%v", tc.offered)
		require.Equal(t, tc.want, v, "%v", tc.offered)
	}
}

func TestCheckID(t *testing.T) {
	for _, ok := range []string{"a", "web-01", "host.example.com", "agent_1:eu", "...a", strings.Repeat("x", MaxIDLen)} {
		require.NoError(t, CheckID("id", ok), ok)
	}
	for _, bad := range []string{"", ".", "..", "../../etc", "a/b", "a\\b", "gw\u202e1", "a\ufffd", "é", "a b", strings.Repeat("x", MaxIDLen+1)} {
		require.Error(t, CheckID("id", bad), bad)
	}
}

func TestDecodeUnknownType(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		typ  string
		id   string
	}{
		{name: "made-up type", data: rawFrame("BOGUS", `{}`), typ: "BOGUS"},
		{name: "lower case", data: rawFrame("hello", `{"agent_id":"a"}`), typ: "hello"},
		{name: "server-only WELCOME", data: rawFrame(TypeWelcome, `{"session_id":"s"}`), typ: TypeWelcome},
		{name: "server-only COMMAND", data: rawFrame(TypeCommand, `{}`), typ: TypeCommand},
		{name: "server-only RESULT_ACK", data: rawFrame(TypeResultAck, `{}`), typ: TypeResultAck},
		{name: "server-only CANCEL", data: rawFrame(TypeCancel, `{}`), typ: TypeCancel},
		{name: "server-only ERROR", data: rawFrame(TypeError, `{}`), typ: TypeError},
		{name: "no payload", data: []byte(`{"type":"FUTURE","id":"f-9"}`), typ: "FUTURE", id: "f-9"},
		{name: "very long type", data: rawFrame(strings.Repeat("T", 1000), `{}`), typ: strings.Repeat("T", 1000)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode(tc.data)
			require.ErrorIs(t, err, ErrUnknownType)
			var de *DecodeError
			require.False(t, errors.As(err, &de), "an unknown type is not a close-worthy DecodeError")
			require.Equal(t, tc.typ, f.Type)
			require.Equal(t, tc.id, f.ID)
			require.Nil(t, f.Payload)
			require.LessOrEqual(t, len(err.Error()), len(ErrUnknownType.Error())+64+8, "the type is truncated in the message")
		})
	}
}

func TestDecodeErrorText(t *testing.T) {
	cases := []struct {
		err  DecodeError
		want string
	}{
		{DecodeError{CloseCode: CloseInvalidPayload, Reason: "frame is not valid UTF-8"}, "frame is not valid UTF-8"},
		{DecodeError{CloseCode: ClosePolicyViolation, Field: "payload.status", Reason: "bad"}, "payload.status: bad"},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, tc.err.Error())
	}
}

func TestEncodeDecodeServerFrameRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		typ     string
		id      string
		payload any
	}{
		{name: "welcome", typ: TypeWelcome, id: "w-1", payload: &Welcome{SessionID: "s-1", HeartbeatIntervalS: 30, TelemetryIntervalS: 60,
			SigningKeyID: "k1", SigningPublicKey: "MCowBQYDK2VwAyEA", ServerTime: ts1}},
		{name: "command", typ: TypeCommand, payload: &Command{CommandID: "c-1", ExecutionID: "e-1", AgentID: "gateway-001", Verb: "create_panel_user",
			Args: json.RawMessage(`{"username":"u","nested":{"n":[1,2,3]}}`), RequestedBy: "alice", IssuedAt: ts1, ExpiresAt: ts2,
			Nonce: "bm9uY2U=", KeyID: "k1", Signature: "c2lnbmF0dXJl"}},
		{name: "command with empty args object", typ: TypeCommand, id: "x", payload: &Command{CommandID: "c", ExecutionID: "e", Verb: "noop", Args: json.RawMessage(`{}`)}},
		{name: "result ack", typ: TypeResultAck, id: "r", payload: &ResultAck{ExecutionID: "e-1"}},
		{name: "cancel", typ: TypeCancel, payload: &Cancel{ExecutionID: "e-1", Reason: "cancelled by alice"}},
		{name: "error", typ: TypeError, payload: &ErrorPayload{Code: ErrCodeUnknownType, Message: `unknown frame type "X" <&>`}},
		{name: "error with unicode", typ: TypeError, payload: &ErrorPayload{Code: ErrCodeInvalidPayload, Message: "ünïcödé ✓"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.typ, tc.id, tc.payload)
			require.NoError(t, err)
			f, err := DecodeServerFrame(b)
			require.NoError(t, err)
			require.Equal(t, tc.typ, f.Type)
			require.Equal(t, tc.id, f.ID)
			require.Equal(t, tc.payload, f.Payload)
		})
	}
}

func TestEncodeAgentFramesRoundTrip(t *testing.T) {
	cases := []struct {
		typ     string
		payload any
	}{
		{TypeHello, &Hello{AgentID: "a", Site: "s", Capabilities: []string{"x"}, Labels: map[string]string{"k": "v"}}},
		{TypeHeartbeat, &Heartbeat{Status: HealthDegraded, UptimeS: 7, RunningCommands: 1}},
		{TypeTelemetry, &Telemetry{TS: ts1, Metrics: map[string]float64{"cpu_percent": 1.5}}},
		{TypeAck, &Ack{ExecutionID: "e", State: AckStarted}},
		{TypeCommandResult, &CommandResult{ExecutionID: "e", CommandID: "c", Status: ResultSucceeded, Output: "out", StartedAt: ts1, FinishedAt: ts2}},
	}
	for _, tc := range cases {
		t.Run(tc.typ, func(t *testing.T) {
			b, err := Encode(tc.typ, "id-1", tc.payload)
			require.NoError(t, err)
			f, err := Decode(b)
			require.NoError(t, err)
			require.Equal(t, Frame{Type: tc.typ, ID: "id-1", Payload: tc.payload}, f)
		})
	}
}

func TestEncodeUnmarshallablePayload(t *testing.T) {
	_, err := Encode(TypeError, "", map[string]any{"c": make(chan int)})
	require.Error(t, err)
	require.Contains(t, err.Error(), TypeError)
}

func TestDecodeServerFrame(t *testing.T) {
	cases := []struct {
		name       string
		data       []byte
		wantType   string
		unknown    bool
		closeCode  int
		wantResult any
	}{
		{name: "malformed", data: []byte(`{`), closeCode: CloseInvalidPayload},
		{name: "payload wrong type", data: rawFrame(TypeCancel, `{"execution_id":5}`), wantType: TypeCancel, closeCode: CloseInvalidPayload},
		{name: "unknown type", data: rawFrame("NEWTHING", `{}`), wantType: "NEWTHING", unknown: true},
		{name: "agent-only type", data: rawFrame(TypeHello, `{"agent_id":"a"}`), wantType: TypeHello, unknown: true},
		{name: "missing payload gives a zero payload", data: []byte(`{"type":"RESULT_ACK"}`), wantType: TypeResultAck, wantResult: &ResultAck{}},
		{name: "unknown fields ignored", data: rawFrame(TypeCancel, `{"execution_id":"e","reason":"r","new":1}`), wantType: TypeCancel, wantResult: &Cancel{ExecutionID: "e", Reason: "r"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeServerFrame(tc.data)
			require.Equal(t, tc.wantType, f.Type)
			switch {
			case tc.unknown:
				require.ErrorIs(t, err, ErrUnknownType)
				require.Nil(t, f.Payload)
			case tc.closeCode != 0:
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				require.Equal(t, tc.closeCode, de.CloseCode)
				require.Nil(t, f.Payload)
			default:
				require.NoError(t, err)
				require.Equal(t, tc.wantResult, f.Payload)
			}
		})
	}
}

// fuzzSeeds are valid frames of every type plus assorted garbage.
var fuzzSeeds = []string{
	`{"type":"HELLO","id":"1","payload":{"agent_id":"gateway-001","site":"production","version":"1.0","capabilities":["create_user"],"labels":{"role":"gateway"},"hostname":"h","os":"linux","arch":"amd64"}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":100,"running_commands":2}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07.123+02:00","metrics":{"cpu_percent":1.5,"mem_percent":40,"load1":-0}}}`,
	`{"type":"ACK","payload":{"execution_id":"e-1","state":"started"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e-1","command_id":"c-1","status":"failed","exit_code":-1,"output":"\u00e9\ud83d\ude00","error":"x","started_at":"2025-03-04T05:06:07Z","finished_at":"2025-03-04T05:06:08.999999999Z"}}`,
	`{"type":"WELCOME","payload":{"session_id":"s"}}`,
	`{"type":"BOGUS","payload":{}}`,
	`{"type":"HELLO","payload":null}`,
	`{"type":"HELLO"}`,
	`{"payload":{}}`,
	`{"type":"HELLO","payload":{"agent_id":"a b"}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":-5}}`,
	`{"type":"ACK","payload":[]}`,
	`{"type":"ACK","payload":{"execution_id":"\ud800","state":"received"}}`,
	"{\"type\":\"HELLO\",\"payload\":{\"agent_id\":\"\xff\"}}",
	`null`,
	`[]`,
	`{`,
	``,
	`"x"`,
	`{"type":"TELEMETRY","payload":{"ts":"0001-01-01T00:00:00Z","metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"a":"x","b":2,"":3}}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","running_commands":1.5,"uptime_s":"1"}}`,
	`{"type":"HELLO","payload":{"agent_id":"a","protocol_versions":[1,2],"labels":{"k":1}}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"failed","output":"\u00e9\u00e9\u00e9","output_truncated":true}}`,
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Decode(data)
		if (err == nil) == (fr.Payload == nil) {
			t.Fatalf("error and payload must be exclusive: err=%v payload=%#v", err, fr.Payload)
		}
		if err != nil {
			var de *DecodeError
			if errors.As(err, &de) {
				if de.CloseCode != CloseInvalidPayload && de.CloseCode != refused {
					t.Fatalf("DecodeError with close code %d: %v", de.CloseCode, err)
				}
				if de.CloseCode == refused && (de.Field == "" || strings.Contains(de.Reason, "json")) {
					t.Fatalf("a refused frame must name its field in the protocol's words: %v", err)
				}
			} else if !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error is neither a DecodeError nor ErrUnknownType: %v", err)
			}
			return
		}
		for _, d := range fr.Dropped {
			if d.CloseCode != refused || !strings.HasPrefix(d.Field, "payload.metrics") {
				t.Fatalf("dropped value %v is not a refused metric", d)
			}
		}
		if r, ok := fr.Payload.(*CommandResult); ok && (len(r.Output) > MaxOutputBytes || len(r.Error) > MaxErrorBytes) {
			t.Fatalf("result texts beyond the limits: %d, %d bytes", len(r.Output), len(r.Error))
		}
		b, err := Encode(fr.Type, fr.ID, fr.Payload)
		if err != nil {
			t.Fatalf("re-encoding a decoded %s frame: %v", fr.Type, err)
		}
		fr2, err := Decode(b)
		if err != nil {
			t.Fatalf("re-decoding %q (from %q): %v", b, data, err)
		}
		if fr2.Type != fr.Type || fr2.ID != fr.ID {
			t.Fatalf("envelope changed: %q/%q -> %q/%q", fr.Type, fr.ID, fr2.Type, fr2.ID)
		}
		require.Equal(t, normalizeTimes(fr.Payload), normalizeTimes(fr2.Payload), "payload changed after a round trip through %q", b)
	})
}

// normalizeTimes returns a copy of a payload with times in UTC, so payloads
// that denote the same instants compare equal whatever their zone pointers.
func normalizeTimes(p any) any {
	switch v := p.(type) {
	case *Telemetry:
		c := *v
		c.TS = c.TS.UTC()
		return &c
	case *CommandResult:
		c := *v
		c.StartedAt, c.FinishedAt = c.StartedAt.UTC(), c.FinishedAt.UTC()
		return &c
	}
	return p
}

func FuzzDecodeServerFrame(f *testing.F) {
	seeds := []any{
		&Welcome{SessionID: "s", HeartbeatIntervalS: 30, ServerTime: ts1},
		&Command{CommandID: "c", ExecutionID: "e", Verb: "v", Args: json.RawMessage(`{"a":1}`), IssuedAt: ts1},
		&ResultAck{ExecutionID: "e"},
		&Cancel{ExecutionID: "e", Reason: "r"},
		&ErrorPayload{Code: "c", Message: "m"},
	}
	for i, typ := range []string{TypeWelcome, TypeCommand, TypeResultAck, TypeCancel, TypeError} {
		b, err := Encode(typ, "id", seeds[i])
		require.NoError(f, err)
		f.Add(b)
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeServerFrame(data)
		if (err == nil) == (fr.Payload == nil) {
			t.Fatalf("error and payload must be exclusive: err=%v payload=%#v", err, fr.Payload)
		}
		if err != nil {
			var de *DecodeError
			if errors.As(err, &de) {
				if de.CloseCode != CloseInvalidPayload {
					t.Fatalf("DecodeError with close code %d: %v", de.CloseCode, err)
				}
			} else if !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error is neither a DecodeError nor ErrUnknownType: %v", err)
			}
		}
	})
}
