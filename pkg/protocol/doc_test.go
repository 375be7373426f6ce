package protocol

import (
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// docTables parses docs/protocol.md into its tables, keyed by the heading
// above each (the first word after the hashes: "HELLO", "Limits", ...); each
// row is its cells with the surrounding backquotes removed.
func docTables(t *testing.T) map[string][][]string {
	t.Helper()
	raw, err := os.ReadFile("../../docs/protocol.md")
	require.NoError(t, err)
	tables := map[string][][]string{}
	heading := ""
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#"):
			heading = strings.Fields(strings.TrimLeft(line, "# "))[0]
		case strings.HasPrefix(line, "|") && !strings.HasPrefix(line, "|---"):
			var cells []string
			for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
				cells = append(cells, strings.Trim(strings.TrimSpace(c), "`"))
			}
			tables[heading] = append(tables[heading], cells)
		}
	}
	return tables
}

// The field tables of docs/protocol.md are the protocol types: every JSON
// field is listed with the type the decoder takes, and nothing else is.
func TestProtocolDocMatchesCode(t *testing.T) {
	tables := docTables(t)
	frames := map[string]any{
		"Frames": Envelope{}, TypeHello: Hello{}, TypeWelcome: Welcome{}, TypeHeartbeat: Heartbeat{},
		TypeTelemetry: Telemetry{}, TypeCommand: Command{}, TypeAck: Ack{}, TypeCommandResult: CommandResult{},
		TypeResultAck: ResultAck{}, TypeCancel: Cancel{}, TypeError: ErrorPayload{},
	}
	for heading, v := range frames {
		t.Run(heading, func(t *testing.T) {
			rows := tables[heading]
			require.NotEmpty(t, rows, "docs/protocol.md has no table under %q", heading)
			require.Equal(t, []string{"field", "type", "required", "rules"}, rows[0])
			doc := map[string]string{}
			for _, r := range rows[1:] {
				require.Len(t, r, 4, "row %v", r)
				doc[r[0]] = r[1]
			}
			code := map[string]string{}
			typ := reflect.TypeOf(v)
			for i := range typ.NumField() {
				f := typ.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				_, noun, _ := strings.Cut(TypeName(f.Type), " ")
				code[name] = noun
			}
			require.Equal(t, code, doc, "fields and types of %s", heading)
		})
	}

	// Allowed values named in the rules column.
	rules := func(heading, field string) string {
		for _, r := range tables[heading] {
			if r[0] == field {
				return r[3]
			}
		}
		t.Fatalf("no %s.%s row", heading, field)
		return ""
	}
	for heading, want := range map[string]map[string][]string{
		TypeHeartbeat:     {"status": {HealthHealthy, HealthDegraded, HealthUnhealthy}},
		TypeAck:           {"state": {AckReceived, AckStarted}},
		TypeCommandResult: {"status": {ResultSucceeded, ResultFailed}, "output": {TruncationMarker[1:]}},
		TypeResultAck:     {"outcome": {OutcomeStored, OutcomeDuplicate, OutcomeUnknownExecution, OutcomeNotYours}},
		TypeError:         {"code": {ErrCodeInvalidPayload, ErrCodeUnknownType, ErrCodeOutOfWindow, ErrCodeIdentity, ErrCodeUnsupported}},
	} {
		for field, values := range want {
			for _, v := range values {
				require.Contains(t, rules(heading, field), v, "%s.%s names %q", heading, field, v)
			}
		}
	}

	// Every limit with its value.
	limits := map[string]any{
		"MaxIDLen": MaxIDLen, "MaxShortFieldLen": MaxShortFieldLen, "MaxCapabilities": MaxCapabilities,
		"MaxLabels": MaxLabels, "MaxProtocolVersions": MaxProtocolVersions, "MaxMetrics": MaxMetrics,
		"MaxOutputBytes": MaxOutputBytes, "MaxErrorBytes": MaxErrorBytes, "DefaultReadLimit": DefaultReadLimit,
		"MaxRunningCommands": MaxRunningCommands, "TelemetryMaxAge": TelemetryMaxAge, "TelemetryMaxAhead": TelemetryMaxAhead,
	}
	documented := map[string]bool{}
	for _, r := range tables["Limits"][1:] {
		want, ok := limits[r[2]]
		require.True(t, ok, "Limits names an unknown constant %q", r[2])
		documented[r[2]] = true
		switch w := want.(type) {
		case time.Duration:
			d, err := time.ParseDuration(r[1])
			require.NoError(t, err)
			require.Equal(t, w, d, r[2])
		default:
			n, err := strconv.Atoi(r[1])
			require.NoError(t, err)
			require.Equal(t, want, n, r[2])
		}
	}
	require.Len(t, documented, len(limits), "every limit is documented")

	// Every close code the gateway uses, and no other.
	var codes []int
	for _, r := range tables["Close"][1:] {
		n, err := strconv.Atoi(r[0])
		require.NoError(t, err)
		codes = append(codes, n)
	}
	want := []int{CloseNormal, CloseGoingAway, CloseInvalidPayload, ClosePolicyViolation, CloseMessageTooBig, CloseServiceRestart}
	slices.Sort(codes)
	require.Equal(t, want, codes)
}
