package apiserver

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

const testMaxTargets = 5

func intp(v int) *int { return &v }

func fieldNames(errs []FieldError) []string {
	if len(errs) == 0 {
		return nil
	}
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Field
	}
	return out
}

// body builds a request body: a valid minimal request with the given fields
// overriding or adding to it (a nil value removes the field).
func body(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	m := map[string]any{"verb": "restart_service", "agent_targets": []string{"gateway-001"}}
	for k, v := range fields {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

// raw marks a field value to be inserted verbatim.
type raw string

func (r raw) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func TestDecodeCommandRequestValid(t *testing.T) {
	cases := []struct {
		name string
		body []byte
		want CommandRequest
	}{
		{
			name: "minimal",
			body: []byte(`{"verb":"restart_service","agent_targets":["gateway-001"]}`),
			want: CommandRequest{Verb: "restart_service", AgentTargets: []string{"gateway-001"}},
		},
		{
			name: "full seed example",
			body: []byte(`{"verb": "create_panel_user",
				"args": {"username": "testuser", "password": "securepass123", "groups": ["a", "b"], "quota": {"gb": 5}},
				"agent_targets": ["gateway-001", "gateway-002"],
				"priority": "critical", "timeout_seconds": 60, "max_retries": 3, "ttl_seconds": 3600}`),
			want: CommandRequest{
				Verb:         "create_panel_user",
				Args:         json.RawMessage(`{"username": "testuser", "password": "securepass123", "groups": ["a", "b"], "quota": {"gb": 5}}`),
				AgentTargets: []string{"gateway-001", "gateway-002"}, Priority: "critical",
				TimeoutSeconds: intp(60), MaxRetries: intp(3), TTLSeconds: intp(3600),
			},
		},
		{
			name: "bounds inclusive",
			body: body(t, map[string]any{"verb": "v" + strings.Repeat("x", 63), "timeout_seconds": 86400, "max_retries": 20, "ttl_seconds": 2592000,
				"agent_targets": []string{"a", "b", "c", "d", strings.Repeat("z", 128)}}),
			want: CommandRequest{Verb: "v" + strings.Repeat("x", 63), AgentTargets: []string{"a", "b", "c", "d", strings.Repeat("z", 128)},
				TimeoutSeconds: intp(86400), MaxRetries: intp(20), TTLSeconds: intp(2592000)},
		},
		{
			name: "lower bounds",
			body: body(t, map[string]any{"verb": "a", "timeout_seconds": 1, "max_retries": 0, "ttl_seconds": 1}),
			want: CommandRequest{Verb: "a", AgentTargets: []string{"gateway-001"}, TimeoutSeconds: intp(1), MaxRetries: intp(0), TTLSeconds: intp(1)},
		},
		{
			name: "verb with digits dots dashes underscores",
			body: body(t, map[string]any{"verb": "net.ping-v2_x"}),
			want: CommandRequest{Verb: "net.ping-v2_x", AgentTargets: []string{"gateway-001"}},
		},
		{
			name: "args null",
			body: body(t, map[string]any{"args": raw(`null`)}),
			want: CommandRequest{Verb: "restart_service", Args: json.RawMessage(`null`), AgentTargets: []string{"gateway-001"}},
		},
		{
			name: "args empty object",
			body: body(t, map[string]any{"args": raw(`{}`)}),
			want: CommandRequest{Verb: "restart_service", Args: json.RawMessage(`{}`), AgentTargets: []string{"gateway-001"}},
		},
		{
			name: "explicit nulls for optional numbers",
			body: body(t, map[string]any{"timeout_seconds": raw(`null`), "max_retries": raw(`null`), "ttl_seconds": raw(`null`)}),
			want: CommandRequest{Verb: "restart_service", AgentTargets: []string{"gateway-001"}},
		},
		{
			name: "duplicate targets are allowed (deduplicated later)",
			body: body(t, map[string]any{"agent_targets": []string{"a", "a"}}),
			want: CommandRequest{Verb: "restart_service", AgentTargets: []string{"a", "a"}},
		},
		{
			name: "punctuation of the id alphabet in agent ids",
			body: body(t, map[string]any{"agent_targets": []string{"gw-1.eu", "site:agent_7", "...x"}}),
			want: CommandRequest{Verb: "restart_service", AgentTargets: []string{"gw-1.eu", "site:agent_7", "...x"}},
		},
		{
			name: "surrounding whitespace",
			body: []byte("\n  {\"verb\":\"a\",\"agent_targets\":[\"x\"]}  \n\t"),
			want: CommandRequest{Verb: "a", AgentTargets: []string{"x"}},
		},
	}
	for _, p := range []string{"", "low", "normal", "high", "critical"} {
		cases = append(cases, struct {
			name string
			body []byte
			want CommandRequest
		}{
			name: "priority " + p,
			body: body(t, map[string]any{"priority": p}),
			want: CommandRequest{Verb: "restart_service", AgentTargets: []string{"gateway-001"}, Priority: p},
		})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, errs := DecodeCommandRequest(tc.body, testMaxTargets)
			require.Empty(t, errs)
			require.Equal(t, tc.want, req)
		})
	}
}

func TestDecodeCommandRequestInvalid(t *testing.T) {
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("gw-%d", i)
		}
		return out
	}
	cases := []struct {
		name    string
		body    []byte
		fields  []string
		message string // substring of the first error's message, if set
	}{
		// verb
		{name: "verb missing", body: body(t, map[string]any{"verb": nil}), fields: []string{"verb"}},
		{name: "verb empty", body: body(t, map[string]any{"verb": ""}), fields: []string{"verb"}},
		{name: "verb upper case", body: body(t, map[string]any{"verb": "Restart"}), fields: []string{"verb"}},
		{name: "verb starts with digit", body: body(t, map[string]any{"verb": "1restart"}), fields: []string{"verb"}},
		{name: "verb starts with underscore", body: body(t, map[string]any{"verb": "_restart"}), fields: []string{"verb"}},
		{name: "verb too long", body: body(t, map[string]any{"verb": "v" + strings.Repeat("x", 64)}), fields: []string{"verb"}},
		{name: "verb with space", body: body(t, map[string]any{"verb": "re start"}), fields: []string{"verb"}},
		{name: "verb with trailing newline", body: body(t, map[string]any{"verb": "restart\n"}), fields: []string{"verb"}},
		{name: "verb with slash", body: body(t, map[string]any{"verb": "../etc"}), fields: []string{"verb"}},
		{name: "verb non-ASCII", body: body(t, map[string]any{"verb": "résumé"}), fields: []string{"verb"}},

		// args
		{name: "args array", body: body(t, map[string]any{"args": raw(`[1,2]`)}), fields: []string{"args"}},
		{name: "args string", body: body(t, map[string]any{"args": raw(`"x"`)}), fields: []string{"args"}},
		{name: "args number", body: body(t, map[string]any{"args": raw(`42`)}), fields: []string{"args"}},
		{name: "args bool", body: body(t, map[string]any{"args": raw(`true`)}), fields: []string{"args"}},
		{name: "echo message beyond the output limit", body: body(t, map[string]any{"verb": "echo", "args": map[string]any{"message": strings.Repeat("m", protocol.MaxOutputBytes+1)}}), fields: []string{"args.message"}, message: "output limit"},

		// agent ids outside the safe alphabet
		{name: "target right-to-left override", body: body(t, map[string]any{"agent_targets": []string{"gw\u202e1"}}), fields: []string{"agent_targets[0]"}},
		{name: "target path traversal", body: body(t, map[string]any{"agent_targets": []string{"../../etc"}}), fields: []string{"agent_targets[0]"}},
		{name: "target with a slash", body: body(t, map[string]any{"agent_targets": []string{"spiffe://site/agent:7"}}), fields: []string{"agent_targets[0]"}},
		{name: "target non-ASCII", body: body(t, map[string]any{"agent_targets": []string{"gw/ü-1"}}), fields: []string{"agent_targets[0]"}},
		{name: "target no-break space", body: body(t, map[string]any{"agent_targets": []string{"\u00a0nbsp"}}), fields: []string{"agent_targets[0]"}},
		{name: "target only dots", body: body(t, map[string]any{"agent_targets": []string{".."}}), fields: []string{"agent_targets[0]"}},

		// agent_targets
		{name: "targets missing", body: body(t, map[string]any{"agent_targets": nil}), fields: []string{"agent_targets"}},
		{name: "targets empty", body: body(t, map[string]any{"agent_targets": []string{}}), fields: []string{"agent_targets"}},
		{name: "targets null", body: body(t, map[string]any{"agent_targets": raw(`null`)}), fields: []string{"agent_targets"}},
		{name: "targets too many", body: body(t, map[string]any{"agent_targets": many(testMaxTargets + 1)}), fields: []string{"agent_targets"}, message: fmt.Sprint(testMaxTargets)},
		{name: "target empty id", body: body(t, map[string]any{"agent_targets": []string{""}}), fields: []string{"agent_targets[0]"}},
		{name: "target with space", body: body(t, map[string]any{"agent_targets": []string{"ok", "gw 1"}}), fields: []string{"agent_targets[1]"}},
		{name: "target with tab", body: body(t, map[string]any{"agent_targets": []string{"a", "b", "gw\t1"}}), fields: []string{"agent_targets[2]"}},
		{name: "target with newline", body: body(t, map[string]any{"agent_targets": []string{"gw1\n"}}), fields: []string{"agent_targets[0]"}},
		{name: "target with NUL", body: body(t, map[string]any{"agent_targets": []string{"gw\x001"}}), fields: []string{"agent_targets[0]"}},
		{name: "target with DEL", body: body(t, map[string]any{"agent_targets": []string{"gw\x7f"}}), fields: []string{"agent_targets[0]"}},
		{name: "target too long", body: body(t, map[string]any{"agent_targets": []string{strings.Repeat("a", 129)}}), fields: []string{"agent_targets[0]"}},
		{name: "only the first bad target is named", body: body(t, map[string]any{"agent_targets": []string{"ok", "", "b c"}}), fields: []string{"agent_targets[1]"}},

		// priority
		{name: "priority unknown", body: body(t, map[string]any{"priority": "urgent"}), fields: []string{"priority"}},
		{name: "priority upper case", body: body(t, map[string]any{"priority": "HIGH"}), fields: []string{"priority"}},
		{name: "priority padded", body: body(t, map[string]any{"priority": " low"}), fields: []string{"priority"}},

		// numbers
		{name: "timeout zero", body: body(t, map[string]any{"timeout_seconds": 0}), fields: []string{"timeout_seconds"}},
		{name: "timeout negative", body: body(t, map[string]any{"timeout_seconds": -5}), fields: []string{"timeout_seconds"}},
		{name: "timeout over a day", body: body(t, map[string]any{"timeout_seconds": 86401}), fields: []string{"timeout_seconds"}},
		{name: "timeout a year", body: body(t, map[string]any{"timeout_seconds": 365 * 86400}), fields: []string{"timeout_seconds"}},
		{name: "retries negative", body: body(t, map[string]any{"max_retries": -1}), fields: []string{"max_retries"}},
		{name: "retries over cap", body: body(t, map[string]any{"max_retries": 21}), fields: []string{"max_retries"}},
		{name: "retries huge", body: body(t, map[string]any{"max_retries": math.MaxInt32}), fields: []string{"max_retries"}},
		{name: "ttl zero", body: body(t, map[string]any{"ttl_seconds": 0}), fields: []string{"ttl_seconds"}},
		{name: "ttl negative", body: body(t, map[string]any{"ttl_seconds": -3600}), fields: []string{"ttl_seconds"}},
		{name: "ttl over 30 days", body: body(t, map[string]any{"ttl_seconds": 2592001}), fields: []string{"ttl_seconds"}},
		{name: "ttl max int32", body: body(t, map[string]any{"ttl_seconds": math.MaxInt32}), fields: []string{"ttl_seconds"}},

		// several problems at once are all reported, in field order
		{
			name: "every field wrong",
			body: body(t, map[string]any{"verb": "BAD", "args": raw(`[]`), "agent_targets": []string{}, "priority": "x",
				"timeout_seconds": 0, "max_retries": 99, "ttl_seconds": -1}),
			fields: []string{"verb", "args", "agent_targets", "priority", "timeout_seconds", "max_retries", "ttl_seconds"},
		},
		{name: "JSON null body validates as an empty request", body: []byte(`null`), fields: []string{"verb", "agent_targets"}},
		{name: "empty object", body: []byte(`{}`), fields: []string{"verb", "agent_targets"}},

		// body-level problems
		{name: "empty body", body: []byte(``), fields: []string{"body"}, message: "empty"},
		{name: "whitespace body", body: []byte(" \n\t "), fields: []string{"body"}, message: "empty"},
		{name: "unknown field", body: body(t, map[string]any{"bogus": 1}), fields: []string{"body"}, message: `unknown field "bogus"`},
		{name: "unknown nested in nothing", body: []byte(`{"verb":"a","agent_targets":["x"],"extra":{"a":1}}`), fields: []string{"body"}, message: `unknown field "extra"`},
		{name: "trailing object", body: []byte(`{"verb":"a","agent_targets":["x"]} {"verb":"b"}`), fields: []string{"body"}, message: "trailing"},
		{name: "trailing garbage", body: []byte(`{"verb":"a","agent_targets":["x"]} garbage`), fields: []string{"body"}, message: "trailing"},
		{name: "trailing number", body: []byte(`{"verb":"a","agent_targets":["x"]}1`), fields: []string{"body"}, message: "trailing"},
		{name: "trailing brace", body: []byte(`{"verb":"a","agent_targets":["x"]}}`), fields: []string{"body"}, message: "trailing"},
		{name: "trailing bracket", body: []byte(`{"verb":"a","agent_targets":["x"]}]`), fields: []string{"body"}, message: "trailing"},
		{name: "timeout overflowing a duration", body: []byte(`{"verb":"a","agent_targets":["x"],"timeout_seconds":9223372037}`), fields: []string{"timeout_seconds"}},
		{name: "ttl overflowing a duration", body: []byte(`{"verb":"a","agent_targets":["x"],"ttl_seconds":18446744074}`), fields: []string{"ttl_seconds"}},
		{name: "agent id of 129 bytes in 65 characters", body: []byte(`{"verb":"a","agent_targets":["` + strings.Repeat("é", 64) + `x"]}`), fields: []string{"agent_targets[0]"}},
		{name: "truncated", body: []byte(`{"verb":"a","agent_targets":["x"`), fields: []string{"body"}, message: "malformed JSON"},
		{name: "syntax error", body: []byte(`{"verb" "a"}`), fields: []string{"body"}, message: "malformed JSON at byte"},
		{name: "single quotes", body: []byte(`{'verb':'a'}`), fields: []string{"body"}, message: "malformed JSON"},
		{name: "not JSON", body: []byte(`verb=a&agent_targets=x`), fields: []string{"body"}, message: "malformed JSON"},
		{name: "array body", body: []byte(`[{"verb":"a"}]`), fields: []string{"body"}, message: "must be a JSON object"},
		{name: "string body", body: []byte(`"restart"`), fields: []string{"body"}, message: "must be a JSON object"},
		{name: "number body", body: []byte(`42`), fields: []string{"body"}, message: "must be a JSON object"},

		// wrong JSON types are named in the message
		{name: "verb a number", body: body(t, map[string]any{"verb": 5}), fields: []string{"body"}, message: "verb"},
		{name: "verb an object", body: body(t, map[string]any{"verb": map[string]any{}}), fields: []string{"body"}, message: "verb"},
		{name: "targets a string", body: body(t, map[string]any{"agent_targets": "gateway-001"}), fields: []string{"body"}, message: "agent_targets"},
		{name: "target a number", body: body(t, map[string]any{"agent_targets": []any{1}}), fields: []string{"body"}, message: "agent_targets"},
		{name: "priority a number", body: body(t, map[string]any{"priority": 2}), fields: []string{"body"}, message: "priority"},
		{name: "timeout a string", body: body(t, map[string]any{"timeout_seconds": "60"}), fields: []string{"body"}, message: "timeout_seconds"},
		{name: "timeout fractional", body: body(t, map[string]any{"timeout_seconds": 1.5}), fields: []string{"body"}, message: "timeout_seconds"},
		{name: "timeout exponent", body: body(t, map[string]any{"timeout_seconds": raw(`6e1`)}), fields: []string{"body"}, message: "timeout_seconds"},
		{name: "timeout beyond int64", body: body(t, map[string]any{"timeout_seconds": raw(`99999999999999999999`)}), fields: []string{"body"}, message: "timeout_seconds"},
		{name: "retries a bool", body: body(t, map[string]any{"max_retries": true}), fields: []string{"body"}, message: "max_retries"},
		{name: "ttl an array", body: body(t, map[string]any{"ttl_seconds": []int{1}}), fields: []string{"body"}, message: "ttl_seconds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := DecodeCommandRequest(tc.body, testMaxTargets)
			require.Equal(t, tc.fields, fieldNames(errs), "errors: %+v", errs)
			for _, e := range errs {
				require.NotEmpty(t, e.Message)
			}
			if tc.message != "" {
				require.Contains(t, errs[0].Message, tc.message)
			}
		})
	}
}

func TestDecodeCommandRequestMaxTargets(t *testing.T) {
	targets := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("a%d", i)
		}
		return out
	}
	cases := []struct {
		max, n int
		ok     bool
	}{
		{1, 1, true},
		{1, 2, false},
		{3, 3, true},
		{3, 4, false},
		{10000, 10000, true},
		{10000, 10001, false},
		{0, 1, false}, // a zero limit admits nothing
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("max%d_n%d", tc.max, tc.n), func(t *testing.T) {
			req, errs := DecodeCommandRequest(body(t, map[string]any{"agent_targets": targets(tc.n)}), tc.max)
			if tc.ok {
				require.Empty(t, errs)
				require.Len(t, req.AgentTargets, tc.n)
				return
			}
			require.Equal(t, []string{"agent_targets"}, fieldNames(errs))
		})
	}
}

func FuzzDecodeCommandRequest(f *testing.F) {
	seeds := []string{
		`{"verb":"restart_service","agent_targets":["gateway-001"]}`,
		`{"verb":"create_panel_user","args":{"username":"u","password":"p"},"agent_targets":["a","b"],"priority":"high","timeout_seconds":60,"max_retries":3,"ttl_seconds":3600}`,
		`{"verb":"a","agent_targets":["x"],"args":null,"timeout_seconds":null}`,
		`{"verb":"BAD","agent_targets":[]}`,
		`{"verb":"a","agent_targets":["a b"]}`,
		`{"verb":"a","agent_targets":["x"],"bogus":1}`,
		`{"verb":"a","agent_targets":["x"]} trailing`,
		`{"verb":"a","agent_targets":["x"],"ttl_seconds":2592000}`,
		`{"verb":"a","agent_targets":"x"}`,
		`null`, `[]`, `{}`, ``, `{`, `"x"`,
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint8(i))
	}
	f.Fuzz(func(t *testing.T, data []byte, m uint8) {
		maxTargets := int(m%8) + 1
		req, errs := DecodeCommandRequest(data, maxTargets)
		for _, e := range errs {
			if e.Field == "" || e.Message == "" {
				t.Fatalf("field error without field or message: %+v", e)
			}
		}
		if len(errs) > 0 {
			return
		}
		if !verbPattern.MatchString(req.Verb) {
			t.Fatalf("accepted verb %q", req.Verb)
		}
		if n := len(req.AgentTargets); n < 1 || n > maxTargets {
			t.Fatalf("accepted %d targets with a limit of %d", n, maxTargets)
		}
		for _, id := range req.AgentTargets {
			if protocol.CheckID("", id) != nil {
				t.Fatalf("accepted agent id %q", id)
			}
		}
		if _, ok := store.ParsePriority(req.Priority); !ok {
			t.Fatalf("accepted priority %q", req.Priority)
		}
		if len(req.Args) > 0 && string(req.Args) != "null" {
			var obj map[string]any
			if err := json.Unmarshal(req.Args, &obj); err != nil {
				t.Fatalf("accepted args %q: %v", req.Args, err)
			}
		}
		inRange := func(name string, v *int, lo, hi int) {
			if v != nil && (*v < lo || *v > hi) {
				t.Fatalf("accepted %s %d", name, *v)
			}
		}
		inRange("timeout_seconds", req.TimeoutSeconds, 1, 86400)
		inRange("max_retries", req.MaxRetries, 0, maxRetriesCap)
		inRange("ttl_seconds", req.TTLSeconds, 1, 30*86400)
	})
}

func TestRedactArgs(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string
	}{
		{"flat password", `{"username":"testuser","password":"securepass123"}`, `{"username":"testuser","password":"REDACTED"}`},
		{"no secrets kept as is", `{"username":"u","count":3,"ratio":0.5,"enabled":true,"none":null,"list":[1,"two",false]}`,
			`{"username":"u","count":3,"ratio":0.5,"enabled":true,"none":null,"list":[1,"two",false]}`},
		{"api_key and token", `{"api_key":"k","token":"t","host":"h"}`, `{"api_key":"REDACTED","token":"REDACTED","host":"h"}`},
		{"case insensitive", `{"Password":"a","API_KEY":"b","X-Auth-Token":"c","privateKey":"d","Client_Secret":"e"}`,
			`{"Password":"REDACTED","API_KEY":"REDACTED","X-Auth-Token":"REDACTED","privateKey":"REDACTED","Client_Secret":"REDACTED"}`},
		{"other secret words", `{"passwd":"a","credentials":"b","private":"c","secret":"d","db_password_hash":"e"}`,
			`{"passwd":"REDACTED","credentials":"REDACTED","private":"REDACTED","secret":"REDACTED","db_password_hash":"REDACTED"}`},
		{"nested object", `{"db":{"host":"h","port":5432,"auth":{"user":"u","password":"p"}}}`,
			`{"db":{"host":"h","port":5432,"auth":{"user":"u","password":"REDACTED"}}}`},
		{"large integers stay exact", `{"id":9007199254740993,"password":"p"}`, `{"id":9007199254740993,"password":"REDACTED"}`},
		{"deeply nested", `{"a":{"b":{"c":{"d":{"e":{"api_key":"k","v":1}}}}}}`, `{"a":{"b":{"c":{"d":{"e":{"api_key":"REDACTED","v":1}}}}}}`},
		{"objects in arrays", `{"users":[{"name":"a","password":"x"},{"name":"b","token":"y"},"plain",3]}`,
			`{"users":[{"name":"a","password":"REDACTED"},{"name":"b","token":"REDACTED"},"plain",3]}`},
		{"arrays in arrays", `{"m":[[{"secret":"s","k":"v"}]]}`, `{"m":[[{"secret":"REDACTED","k":"v"}]]}`},
		{"secret holding an object is replaced whole", `{"credentials":{"user":"u","pass":"p"},"keep":{"x":1}}`, `{"credentials":"REDACTED","keep":{"x":1}}`},
		{"secret holding non-strings", `{"token":12345,"private":true,"secret":null,"password":["a","b"]}`,
			`{"token":"REDACTED","private":"REDACTED","secret":"REDACTED","password":"REDACTED"}`},
		{"secret-looking values are not keys", `{"note":"my password is hunter2"}`, `{"note":"my password is hunter2"}`},
		{"top-level array", `[{"password":"x"},{"user":"u"}]`, `[{"password":"REDACTED"},{"user":"u"}]`},
		{"top-level scalar", `"password"`, `"password"`},
		{"empty object", `{}`, `{}`},
		{"null", `null`, `null`},
		{"invalid JSON", `{"password":`, `{}`},
		{"empty input", ``, `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := store.JSON(tc.in)
			orig := string(in)
			got := redactArgs(in)
			require.JSONEq(t, tc.want, string(got))
			require.Equal(t, orig, string(in), "the stored args are not modified")
		})
	}
}

func TestIsSecretKey(t *testing.T) {
	cases := []struct {
		key    string
		secret bool
	}{
		{"password", true}, {"PASSWORD", true}, {"user_passwd", true}, {"api_key", true}, {"apiKey", true},
		{"access_token", true}, {"client_secret", true}, {"credential", true}, {"private_key_pem", true},
		{"username", false}, {"host", false}, {"port", false}, {"", false}, {"pass", false}, {"auth", false},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			require.Equal(t, tc.secret, argseal.IsSecretKey(tc.key))
		})
	}
}
