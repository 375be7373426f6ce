package protocol

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// The hot frames (HEARTBEAT, TELEMETRY, ACK, COMMAND_RESULT) and every
// envelope are decoded here without reflection, by the rules encoding/json
// applies to the structs in protocol.go: the envelope's names match
// case-insensitively (strings.EqualFold) and the last duplicate wins;
// payload names match exactly; null leaves a field at its zero value. The text
// is checked by json.Valid first, so the scanner below only walks valid JSON.
// HELLO, once per session, keeps decodeFields.

// scanner walks one valid JSON text.
type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value skips one value and returns its text.
func (s *scanner) value() []byte {
	s.skipSpace()
	start := s.pos
	switch s.data[s.pos] {
	case '"':
		s.skipString()
	case '{', '[':
		for depth := 0; ; {
			switch s.data[s.pos] {
			case '"':
				s.skipString()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
			s.pos++
			if depth == 0 {
				return s.data[start:s.pos]
			}
		}
	default: // a number, true, false or null
		for s.pos < len(s.data) {
			switch s.data[s.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.data[start:s.pos]
			}
			s.pos++
		}
	}
	return s.data[start:s.pos]
}

// skipString moves past the string starting at pos.
func (s *scanner) skipString() {
	s.pos++
	for {
		switch s.data[s.pos] {
		case '\\':
			s.pos += 2
			continue
		case '"':
			s.pos++
			return
		}
		s.pos++
	}
}

// member reads the next name and value of the object whose '{' or previous
// member was read last; ok is false at its '}'. The name is the text between
// the quotes, still escaped.
func (s *scanner) member() (name, val []byte, ok bool) {
	s.skipSpace()
	if s.data[s.pos] == ',' {
		s.pos++
		s.skipSpace()
	}
	if s.data[s.pos] == '}' {
		s.pos++
		return nil, nil, false
	}
	start := s.pos
	s.skipString()
	name = s.data[start+1 : s.pos-1]
	s.skipSpace()
	s.pos++ // ':'
	return name, s.value(), true
}

// object starts reading the object val, reporting whether it is one.
func object(val []byte) (scanner, bool) {
	if len(val) == 0 || val[0] != '{' {
		return scanner{}, false
	}
	return scanner{data: val, pos: 1}, true
}

// unquote returns the text of a JSON string's content (between the quotes)
// as encoding/json does: escapes resolved, an invalid surrogate as U+FFFD.
// buf is reused for escaped text.
func unquote(q, buf []byte) []byte {
	i := 0
	for i < len(q) && q[i] != '\\' {
		i++
	}
	if i == len(q) {
		return q
	}
	b := append(buf[:0], q[:i]...)
	for i < len(q) {
		c := q[i]
		if c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		i++
		switch e := q[i]; e {
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r := hex4(q[i+1:])
			i += 5
			if utf16.IsSurrogate(r) {
				if i+6 <= len(q) && q[i] == '\\' && q[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, hex4(q[i+2:])); dec != unicode.ReplacementChar {
						b = utf8.AppendRune(b, dec)
						i += 6
						continue
					}
				}
				r = unicode.ReplacementChar
			}
			b = utf8.AppendRune(b, r)
			continue
		default: // '"', '\\', '/'
			b = append(b, e)
		}
		i++
	}
	return b
}

// hex4 reads the four hex digits of a \u escape (valid JSON has them).
func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// frameType is a frame's type, the package's constant when it is a known one
// (so a frame costs no string for it).
func frameType(b []byte) string {
	for _, t := range [...]string{TypeHeartbeat, TypeTelemetry, TypeCommandResult, TypeAck, TypeHello} {
		if string(b) == t {
			return t
		}
	}
	return string(b)
}

// scanEnvelope reads the envelope as json.Unmarshal into Envelope would; ok is
// false where it would fail (not an object; type or id not a string).
func scanEnvelope(data []byte) (typ, id string, payload []byte, ok bool) {
	s := scanner{data: data}
	s.skipSpace()
	switch data[s.pos] {
	case 'n':
		return "", "", nil, true
	case '{':
		s.pos++
	default:
		return "", "", nil, false
	}
	var buf [32]byte
	ok = true
	for {
		q, val, more := s.member()
		if !more {
			return typ, id, payload, ok
		}
		name := unquote(q, buf[:0])
		field := ""
		switch {
		case bytes.EqualFold(name, []byte("type")):
			field = "type"
		case bytes.EqualFold(name, []byte("id")):
			field = "id"
		case bytes.EqualFold(name, []byte("payload")):
			payload = val
			continue
		default:
			continue
		}
		if string(val) == "null" {
			continue
		}
		if val[0] != '"' {
			ok = false // encoding/json reads on, then fails
			continue
		}
		v := unquote(val[1:len(val)-1], buf[:0])
		if field == "type" {
			typ = frameType(v)
		} else {
			id = string(v)
		}
	}
}

// Type names of refused values, as TypeName words them.
const (
	wantString  = "a string is required"
	wantInteger = "an integer is required"
	wantBool    = "a boolean is required"
	wantTime    = "an RFC 3339 timestamp is required"
)

// payloadFields collects the values of a payload's names (the last of
// duplicates) into vals, by the index of the name in names.
func payloadFields(raw []byte, names []string, vals [][]byte) error {
	if len(raw) == 0 || string(raw) == "null" {
		return invalid("payload", "is required")
	}
	s, ok := object(raw)
	if !ok {
		return invalid("payload", "an object is required")
	}
	var buf [32]byte
	for {
		q, val, more := s.member()
		if !more {
			return nil
		}
		name := unquote(q, buf[:0])
		for i, n := range names {
			if string(name) == n {
				vals[i] = val
				break
			}
		}
	}
}

// present reports whether a payload value is set: given and not null.
func present(v []byte) bool { return v != nil && string(v) != "null" }

// stringValue reads a string field; a value among known is stored as that
// constant, so it costs no string.
func stringValue(field string, v []byte, dst *string, known ...string) error {
	if !present(v) {
		return nil
	}
	if v[0] != '"' {
		return invalid(field, wantString)
	}
	text := unquote(v[1:len(v)-1], nil)
	for _, k := range known {
		if string(text) == k {
			*dst = k
			return nil
		}
	}
	*dst = string(text)
	return nil
}

func intValue(field string, v []byte, dst *int64) error {
	if !present(v) {
		return nil
	}
	if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return invalid(field, wantInteger)
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return invalid(field, wantInteger)
	}
	*dst = n
	return nil
}

func intField(field string, v []byte, dst *int) error {
	var n int64
	if err := intValue(field, v, &n); err != nil {
		return err
	}
	if present(v) {
		*dst = int(n)
	}
	return nil
}

func boolValue(field string, v []byte, dst *bool) error {
	switch {
	case !present(v):
	case string(v) == "true":
		*dst = true
	case string(v) == "false":
		*dst = false
	default:
		return invalid(field, wantBool)
	}
	return nil
}

func timeValue(field string, v []byte, dst *time.Time) error {
	if !present(v) {
		return nil
	}
	// encoding/json reads the string's text as time.Time.UnmarshalText does.
	if v[0] != '"' || dst.UnmarshalText(unquote(v[1:len(v)-1], nil)) != nil {
		return invalid(field, wantTime)
	}
	return nil
}

// The payload names of the hot frames, in their structs' field order (the
// order decodeFields checks them in).
var (
	heartbeatFields = [...]string{"status", "uptime_s", "running_commands"}
	ackFields       = [...]string{"execution_id", "state"}
	resultFields    = [...]string{"execution_id", "command_id", "status", "exit_code", "output", "output_truncated", "error", "started_at", "finished_at"}
	telemetryFields = [...]string{"ts", "metrics"}
)

func decodeHeartbeat(raw []byte) (*Heartbeat, error) {
	var v [3][]byte
	err := payloadFields(raw, heartbeatFields[:], v[:])
	h := &Heartbeat{}
	if err == nil {
		err = stringValue("payload.status", v[0], &h.Status, HealthHealthy, HealthDegraded, HealthUnhealthy)
	}
	if err == nil {
		err = intValue("payload.uptime_s", v[1], &h.UptimeS)
	}
	if err == nil {
		err = intField("payload.running_commands", v[2], &h.RunningCommands)
	}
	if err == nil {
		err = h.validate()
	}
	if err != nil {
		return nil, err
	}
	return h, nil
}

func decodeAck(raw []byte) (*Ack, error) {
	var v [2][]byte
	err := payloadFields(raw, ackFields[:], v[:])
	a := &Ack{}
	if err == nil {
		err = stringValue("payload.execution_id", v[0], &a.ExecutionID)
	}
	if err == nil {
		err = stringValue("payload.state", v[1], &a.State, AckReceived, AckStarted)
	}
	if err == nil {
		err = a.validate()
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

func decodeResult(raw []byte) (*CommandResult, error) {
	var v [9][]byte
	err := payloadFields(raw, resultFields[:], v[:])
	if err != nil {
		return nil, err
	}
	r := &CommandResult{}
	err = stringValue("payload.execution_id", v[0], &r.ExecutionID)
	if err == nil {
		err = stringValue("payload.command_id", v[1], &r.CommandID)
	}
	if err == nil {
		err = stringValue("payload.status", v[2], &r.Status, ResultSucceeded, ResultFailed)
	}
	if err == nil {
		err = intField("payload.exit_code", v[3], &r.ExitCode)
	}
	if err == nil {
		err = stringValue("payload.output", v[4], &r.Output)
	}
	if err == nil {
		err = boolValue("payload.output_truncated", v[5], &r.OutputTruncated)
	}
	if err == nil {
		err = stringValue("payload.error", v[6], &r.Error)
	}
	if err == nil {
		err = timeValue("payload.started_at", v[7], &r.StartedAt)
	}
	if err == nil {
		err = timeValue("payload.finished_at", v[8], &r.FinishedAt)
	}
	if err == nil {
		err = r.validate()
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// metric is one name and value of a TELEMETRY frame's metrics object.
type metric struct {
	name string
	val  []byte
}

// decodeTelemetry keeps the metrics that are numbers (null is 0) and lists the
// others as dropped, in name order; a frame left without metrics is refused.
func decodeTelemetry(raw []byte) (*Telemetry, []*DecodeError, error) {
	var v [2][]byte
	err := payloadFields(raw, telemetryFields[:], v[:])
	var ts time.Time
	if err == nil {
		err = timeValue("payload.ts", v[0], &ts)
	}
	var ms []metric
	if err == nil && present(v[1]) {
		ms, err = metricsOf(v[1])
	}
	switch {
	case err != nil:
		return nil, nil, err
	case ts.IsZero():
		return nil, nil, invalid("payload.ts", "is required")
	case len(ms) == 0:
		return nil, nil, invalid("payload.metrics", "is required")
	case len(ms) > MaxMetrics:
		return nil, nil, invalid("payload.metrics", fmt.Sprintf("more than %d entries", MaxMetrics))
	}
	t := &Telemetry{TS: ts, Metrics: make(map[string]float64, len(ms))}
	var dropped []*DecodeError
	for _, m := range ms {
		f, ok := floatValue(m.val)
		switch {
		case m.name == "" || len(m.name) > MaxShortFieldLen:
			dropped = append(dropped, invalid("payload.metrics", fmt.Sprintf("names must be 1..%d bytes", MaxShortFieldLen)))
		case !ok:
			dropped = append(dropped, invalid("payload.metrics."+truncate(m.name, 64), "a number is required"))
		default:
			t.Metrics[m.name] = f
		}
	}
	if len(t.Metrics) == 0 {
		return nil, dropped, dropped[0]
	}
	return t, dropped, nil
}

// metricsOf lists the metrics object's entries sorted by name, the last of
// duplicate names kept.
func metricsOf(val []byte) ([]metric, error) {
	s, ok := object(val)
	if !ok {
		return nil, invalid("payload.metrics", "an object of JSON values is required")
	}
	ms := make([]metric, 0, 16)
	for {
		q, v, more := s.member()
		if !more {
			break
		}
		ms = append(ms, metric{name: string(unquote(q, nil)), val: v})
	}
	slices.SortStableFunc(ms, func(a, b metric) int { return strings.Compare(a.name, b.name) })
	kept := ms[:0]
	for i, m := range ms {
		if i+1 < len(ms) && ms[i+1].name == m.name {
			continue // a later duplicate follows
		}
		kept = append(kept, m)
	}
	return kept, nil
}

// floatValue reads a metric's value as json.Unmarshal into a float64 does.
func floatValue(v []byte) (float64, bool) {
	if string(v) == "null" {
		return 0, true
	}
	if v[0] != '-' && (v[0] < '0' || v[0] > '9') {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v), 64)
	return f, err == nil
}
