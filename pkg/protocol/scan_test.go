package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireSameDecode checks that Decode and the reference decodeReflect agree
// on data: the same frame, the same dropped values and the same error (text,
// close code, field, reason, unknown type or not).
func requireSameDecode(t testing.TB, data []byte) {
	t.Helper()
	want, wantErr := decodeReflect(data)
	got, gotErr := Decode(data)
	require.Equal(t, wantErr == nil, gotErr == nil, "error: want %v, got %v", wantErr, gotErr)
	if wantErr != nil {
		require.Equal(t, wantErr.Error(), gotErr.Error())
		require.Equal(t, errors.Is(wantErr, ErrUnknownType), errors.Is(gotErr, ErrUnknownType))
		var wde, gde *DecodeError
		require.Equal(t, errors.As(wantErr, &wde), errors.As(gotErr, &gde))
		if wde != nil {
			require.Equal(t, *wde, *gde)
		}
	}
	require.Equal(t, want, got)
}

// equivalenceCases are frames where a hand-written decoder could part from
// encoding/json: name folding, duplicates, null, escapes, number forms, limits.
var equivalenceCases = []string{
	// Envelope names fold as encoding/json folds them; the last duplicate wins.
	`{"TYPE":"HEARTBEAT","Payload":{"status":"healthy"}}`,
	`{"tYpE":"ACK","ID":"x","PAYLOAD":{"execution_id":"e","state":"started"}}`,
	`{"type":"HEARTBEAT","\u0074ype":"ACK","payload":{"execution_id":"e","state":"started"}}`,
	"{\"\u017ftatus\":1,\"type\":\"HEARTBEAT\",\"payload\":{\"\u017ftatus\":\"healthy\"}}",
	"{\"ty\u212ae\":\"ACK\",\"payload\":{}}",
	"{\"\u0131d\":\"x\",\"type\":\"ACK\",\"payload\":{}}",
	"{\"pay\u212aoad\":{},\"type\":\"ACK\"}",
	`{"type":"ACK","type":null,"payload":{"execution_id":"e","state":"received"}}`,
	`{"type":null,"payload":{}}`,
	`{"ty_pe":"ACK","pay-load":{}}`, `{"type":"ACK","_payload":{"execution_id":"e","state":"received"}}`, `{"t\u0059pe":"ACK","payload":{}}`,
	`{"type":"ACK","id":null,"payload":{"execution_id":"e","state":"received"}}`,
	`{"type":"ACK","id":"a","id":"b","payload":{"execution_id":"e","state":"received"}}`,
	`{"type":"ACK","payload":{"execution_id":"e","state":"received"},"payload":null}`,
	`{"type":"ACK","payload":null,"payload":{"execution_id":"e","state":"received"}}`,
	`{"type":"ACK","id":1}`,
	`{"type":true}`,
	`{"type":["ACK"]}`,
	`{"type":{"a":"ACK"},"payload":{}}`,
	`{"type":"\u0041CK","payload":{"execution_id":"e","state":"received"}}`,
	`{"type":"HEART\nBEAT","payload":{}}`,
	`{"type":"\ud800","payload":{}}`,
	`{"type":"\ud83d\ude00","payload":{}}`,
	`{"type":"ACK","id":"\ud83d\ude00\u00e9\\\/\"\b\f\n\r\t","payload":{"execution_id":"e","state":"received"}}`,
	`{"a":{"b":[{"c":"}"}]},"type":"ACK","z":"]","payload":{"execution_id":"e","state":"received"}}`,
	`{"type":"ACK","payload":{"execution_id":"e","state":"received"}}  `,
	` { "type" : "ACK" , "payload" : { "execution_id" : "e" , "state" : "received" } } `,
	`{}`, `{"type":""}`, `null`, ` null `, `true`, `1`, `"ACK"`, `[{"type":"ACK"}]`, `{"type":"ACK"} {}`, `{"type":"ACK",}`, `{'type':'ACK'}`,
	`{"type":"ACK","payload":{"execution_id":"e","state":"received"}`,
	`{"type":"ACK\u0000","payload":{}}`,
	"{\"type\":\"ACK\t\",\"payload\":{}}",
	`{"type":"ACK","payload":{"execution_id":"\'e","state":"received"}}`,

	// Payload names match exactly; null is the zero value; duplicates: the last.
	`{"type":"HEARTBEAT","payload":{"Status":"healthy"}}`,
	"{\"type\":\"HEARTBEAT\",\"payload\":{\"\u017ftatus\":\"healthy\"}}",
	`{"type":"HEARTBEAT","payload":{"st\u0061tus":"healthy"}}`,
	`{"type":"HEARTBEAT","payload":{"status":"bad","status":"healthy"}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","status":null}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":null,"running_commands":null}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":"x","running_commands":"y"}}`,
	`{"type":"HEARTBEAT","payload":{"status":1,"uptime_s":"x"}}`,
	`{"type":"HEARTBEAT","payload":{"status":"\u0068ealthy","uptime_s":1e2}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":-0}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":1.0}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":9223372036854775807}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":9223372036854775808}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":-9223372036854775809}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":true}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":[1]}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":{}}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","running_commands":1048577}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","running_commands":-1}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":-1}}`,
	`{"type":"HEARTBEAT","payload":{"status":["healthy"]}}`,
	`{"type":"HEARTBEAT","payload":{"status":"healthy","nested":{"status":"x"}}}`,
	`{"type":"HEARTBEAT","payload":{}}`, `{"type":"HEARTBEAT","payload":[]}`, `{"type":"HEARTBEAT","payload":""}`, `{"type":"HEARTBEAT","payload":true}`, `{"type":"HEARTBEAT","payload":0}`,
	`{"type":"ACK","payload":{"execution_id":"e","state":"done"}}`,
	`{"type":"ACK","payload":{"execution_id":"a b","state":"received"}}`,
	`{"type":"ACK","payload":{"execution_id":"` + strings.Repeat("e", MaxIDLen+1) + `","state":"received"}}`,
	`{"type":"ACK","id":"` + strings.Repeat("i", MaxIDLen+1) + `","payload":{}}`,
	`{"type":"ACK","payload":{"execution_id":"\u0065","state":"received"}}`,
	`{"type":"ACK","payload":{"execution_id":null,"state":"received"}}`,
	`{"type":"ACK","payload":{"execution_id":false,"state":"received"}}`,

	// COMMAND_RESULT: every field type, times, texts at and past their limits.
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","exit_code":1.5}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","exit_code":"0"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","output_truncated":1}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","output_truncated":false,"output_truncated":true}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","output":5}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","error":{}}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","started_at":"2025-03-04T05:06:07+02:00","finished_at":"2025-03-04T05:06:07.123456789-07:30"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","started_at":"2025-03-04 05:06:07Z"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","started_at":"2025-03-04T05:06:07\u005a"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","started_at":1}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","finished_at":"2025-02-30T05:06:07Z"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"succeeded","finished_at":"10000-01-01T00:00:00Z"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","command_id":"","status":"failed"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","command_id":"c/1","status":"failed"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"failed","exit_code":-2147483649,"output":"\ud800x\udc00\ud83d\ude00","error":"\u0000"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"failed","output":"` + strings.Repeat(`\u00e9`, MaxOutputBytes/2+1) + `"}}`,
	`{"type":"COMMAND_RESULT","payload":{"execution_id":"e","status":"failed","output":"` + strings.Repeat("o", MaxOutputBytes+1) + `","error":"` + strings.Repeat(`\n`, MaxErrorBytes+1) + `"}}`,

	// TELEMETRY: ts, the metrics object, numbers, names, duplicates, limits.
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"a":null}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"a":"x","a":2}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"a":2,"a":"x"}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"b":1,"a":true,"c":[1],"d":{"e":1},"":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"a":1e400,"b":-1e400,"c":1e-400,"d":-0.0,"e":123456789012345678901234567890}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"\u0061":1,"a":2,"\ud800":3,"` + strings.Repeat("n", 300) + `":4}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"` + strings.Repeat("n", MaxShortFieldLen) + `":4}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{"x":"1"}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":null}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":[]}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":"a"}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z"}}`,
	`{"type":"TELEMETRY","payload":{"metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":null,"metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":5,"metrics":5}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025\u002d03-04T05:06:07Z","metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07,5Z","metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T5:06:07Z","metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07+24:00","metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04t05:06:07z","metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":{"a":1},"metrics":{"a":1}}}`,
	`{"type":"HEARTBEAT","payload":{"status_":"healthy","uptime-s":1,"Uptime_s":2}}`,
	`{"type":"TELEMETRY","payload":{"ts":"bad","metrics":5}}`,
	`{"type":"TELEMETRY","payload":{"ts":"0001-01-01T00:00:00Z","metrics":5}}`,
	`{"type":"TELEMETRY","payload":{"ts":"0001-01-01T00:00:00Z","metrics":{}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","Metrics":{"a":1}}}`,
	`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07.5+14:00","metrics":{"a":1},"metrics":{"b":2}}}`,
	telemetryWith(MaxMetrics, 0), telemetryWith(MaxMetrics+1, 0), telemetryWith(MaxMetrics, 5), telemetryWith(MaxMetrics+1, 1),

	// HELLO keeps its decoder; the envelope in front of it is the new one.
	`{"TYPE":"HELLO","payload":{"agent_id":"a","labels":{"k":"v"}}}`,
	`{"type":"HELLO","payload":{"agent_id":"a","Agent_ID":"b"}}`,
}

// telemetryWith builds a TELEMETRY frame of n metrics, dup of them given twice.
func telemetryWith(n, dup int) string {
	var b strings.Builder
	b.WriteString(`{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07Z","metrics":{`)
	for i := range n + dup {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"m` + itoa(i%n) + `":` + itoa(i))
	}
	b.WriteString(`}}}`)
	return b.String()
}

func TestDecodeEquivalence(t *testing.T) {
	for _, s := range append(append([]string{}, equivalenceCases...), fuzzSeeds...) {
		name := s
		if len(name) > 80 {
			name = name[:80]
		}
		t.Run(name, func(t *testing.T) { requireSameDecode(t, []byte(s)) })
	}
}

func FuzzDecodeEquivalence(f *testing.F) {
	for _, s := range equivalenceCases {
		f.Add([]byte(s))
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		requireSameDecode(t, data)
		if fr, err := Decode(data); err == nil && fr.Type == TypeTelemetry {
			tel := fr.Payload.(*Telemetry)
			if want, _ := json.Marshal(tel.Metrics); !bytes.ContainsAny(want, `\`) {
				require.Equal(t, string(want), string(tel.AppendMetricsJSON(nil)))
			} else {
				var back map[string]float64
				require.NoError(t, json.Unmarshal(tel.AppendMetricsJSON(nil), &back))
				require.Equal(t, tel.Metrics, back)
			}
		}
	})
}

// Decode must not keep the caller's buffer: the gateway reads every frame
// into a pooled buffer and reuses it.
func TestDecodeKeepsNothingOfItsInput(t *testing.T) {
	for _, s := range fuzzSeeds {
		data := []byte(s)
		f, err := Decode(data)
		want, wantErr := decodeReflect([]byte(s))
		for i := range data {
			data[i] = 'X'
		}
		require.Equal(t, wantErr == nil, err == nil)
		require.Equal(t, want, f, "after the input was overwritten: %s", s)
	}
}

func BenchmarkDecode(b *testing.B) {
	frames := map[string]string{
		"heartbeat": `{"type":"HEARTBEAT","payload":{"status":"healthy","uptime_s":12345,"running_commands":0}}`,
		"telemetry": `{"type":"TELEMETRY","payload":{"ts":"2025-03-04T05:06:07.123Z","metrics":{"cpu_percent":12.5,"mem_used_bytes":1048576,"mem_percent":40.2,"load1":0.25,"disk_percent":71}}}`,
		"result": `{"type":"COMMAND_RESULT","payload":{"execution_id":"0b9f6a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b","command_id":"7c6b5a49-3827-4615-a4b3-c2d1e0f9a8b7",` +
			`"status":"succeeded","exit_code":0,"output":"ok\n","error":"","started_at":"2025-03-04T05:06:07Z","finished_at":"2025-03-04T05:06:08.5Z"}}`,
	}
	for _, name := range []string{"heartbeat", "telemetry", "result"} {
		data := []byte(frames[name])
		for _, impl := range []struct {
			name   string
			decode func([]byte) (Frame, error)
		}{{"scan", Decode}, {"reflect", decodeReflect}} {
			b.Run(name+"/"+impl.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := impl.decode(data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
