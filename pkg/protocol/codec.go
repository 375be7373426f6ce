package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/viworks/backend-agent/pkg/agentspec"
)

// WebSocket close codes used for protocol violations (RFC 6455 §7.4.1).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseMessageTooBig   = 1009
	CloseServiceRestart  = 1012
)

// ErrUnknownType is returned by Decode for a well-formed envelope of a type this
// version does not know. It is answered with an ERROR frame, not a close.
var ErrUnknownType = errors.New("unknown frame type")

// DecodeError is a frame, or one field of it, that cannot be accepted.
// CloseCode is the close code when the frame ends the session (it is not
// valid UTF-8 or not JSON: 1007); it is 0 when only the frame is refused: the
// gateway answers it with an ERROR frame naming Field and drops it, and the
// session stays (a refused HELLO still ends the handshake with 1008).
type DecodeError struct {
	CloseCode int
	Field     string
	Reason    string
}

func (e *DecodeError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// invalid refuses a frame for one field.
func invalid(field, reason string) *DecodeError {
	return &DecodeError{Field: field, Reason: reason}
}

// Frame is a decoded, validated frame: Type plus one typed payload.
type Frame struct {
	Type    string
	ID      string
	Payload any
	// Dropped lists the values left out of an accepted frame (telemetry
	// metrics that are not numbers), or of a frame refused because none was
	// left, in field order.
	Dropped []*DecodeError
}

// Decode parses and validates one frame sent by an agent. Text that is not
// UTF-8 or not a JSON object yields a DecodeError with close code 1007; an
// invalid field one without a close code that names the field; an unknown
// type ErrUnknownType (wrapped, with the envelope's Type still set). Nothing
// of data is kept: the caller may reuse it.
func Decode(data []byte) (Frame, error) {
	if !utf8.Valid(data) {
		return Frame{}, &DecodeError{CloseCode: CloseInvalidPayload, Reason: "frame is not valid UTF-8"}
	}
	typ, id, payload, ok := "", "", []byte(nil), json.Valid(data)
	if ok {
		typ, id, payload, ok = scanEnvelope(data)
	}
	if !ok {
		return Frame{}, &DecodeError{CloseCode: CloseInvalidPayload, Reason: "malformed JSON: the frame must be one JSON object with a string type and id"}
	}
	f := Frame{Type: typ, ID: id}
	if len(id) > MaxIDLen {
		return f, invalid("id", fmt.Sprintf("longer than %d bytes", MaxIDLen))
	}
	var p any
	var err error
	switch typ {
	case TypeHeartbeat:
		p, err = decodeHeartbeat(payload)
	case TypeTelemetry:
		p, f.Dropped, err = decodeTelemetry(payload)
	case TypeAck:
		p, err = decodeAck(payload)
	case TypeCommandResult:
		p, err = decodeResult(payload)
	case TypeHello:
		h := &Hello{}
		if err = decodeFields("payload", payload, h); err == nil {
			err = h.validate()
		}
		p = h
	case "":
		return f, invalid("type", "is required")
	default:
		return f, fmt.Errorf("%w %q", ErrUnknownType, truncate(typ, 64))
	}
	if err != nil {
		return f, err
	}
	f.Payload = p
	return f, nil
}

// decodeFields decodes a JSON object into the struct dst field by field, so a
// value of the wrong type is refused naming its field (prefix.name) in the
// protocol's words. Unknown names are ignored; null is the zero value.
func decodeFields(prefix string, raw json.RawMessage, dst any) error {
	var fields map[string]json.RawMessage
	if len(raw) == 0 || string(raw) == "null" {
		return invalid(prefix, "is required")
	}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return invalid(prefix, "an object is required")
	}
	v := reflect.ValueOf(dst).Elem()
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		r, ok := fields[name]
		if name == "" || name == "-" || !ok || string(r) == "null" {
			continue
		}
		if err := json.Unmarshal(r, v.Field(i).Addr().Interface()); err != nil {
			return invalid(prefix+"."+name, TypeName(sf.Type)+" is required")
		}
	}
	return nil
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// TypeName names the JSON value a Go field type takes, as the protocol's
// documentation and ERROR frames say it ("a number", "a list of strings").
func TypeName(t reflect.Type) string {
	switch {
	case t == timeType:
		return "an RFC 3339 timestamp"
	case t == rawType:
		return "a JSON value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.Slice:
		return "a list of " + plural(TypeName(t.Elem()))
	case reflect.Map:
		return "an object of " + plural(TypeName(t.Elem()))
	}
	return "a " + t.Kind().String()
}

func plural(name string) string {
	_, noun, _ := strings.Cut(name, " ")
	return noun + "s"
}

// Encode builds a frame for sending.
func Encode(typ, id string, payload any) ([]byte, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encoding %s payload: %w", typ, err)
	}
	return json.Marshal(Envelope{Type: typ, ID: id, Payload: raw})
}

// DecodeServerFrame parses a frame sent by the platform to an agent (used by the
// agent SDK). It checks the envelope and the payload shape, not the semantics.
func DecodeServerFrame(data []byte) (Frame, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Frame{}, &DecodeError{CloseCode: CloseInvalidPayload, Reason: "malformed JSON: " + err.Error()}
	}
	f := Frame{Type: env.Type, ID: env.ID}
	var p any
	switch env.Type {
	case TypeWelcome:
		p = &Welcome{}
	case TypeCommand:
		p = &Command{}
	case TypeResultAck:
		p = &ResultAck{}
	case TypeCancel:
		p = &Cancel{}
	case TypeError:
		p = &ErrorPayload{}
	default:
		return f, fmt.Errorf("%w %q", ErrUnknownType, truncate(env.Type, 64))
	}
	if len(env.Payload) > 0 {
		if err := json.Unmarshal(env.Payload, p); err != nil {
			return f, &DecodeError{CloseCode: CloseInvalidPayload, Field: "payload", Reason: "malformed: " + err.Error()}
		}
	}
	f.Payload = p
	return f, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// IDRule describes the identifier rule CheckID applies, for error messages.
const IDRule = agentspec.IDRule

// CheckID is agentspec.CheckID, the one rule for identifiers wherever they
// enter, answering a *DecodeError like the rest of the decoder.
func CheckID(field, v string) error { return fromSpec(agentspec.CheckID(field, v)) }

// fromSpec turns an agentspec rule's error into the decoder's *DecodeError.
func fromSpec(err error) error {
	var e *agentspec.Error
	if errors.As(err, &e) {
		return invalid(e.Field, e.Reason)
	}
	return err
}

// TruncationMarker ends an output that was cut to the output limit.
const TruncationMarker = "\n[output truncated]"

// Truncate makes s valid UTF-8 and, when it is longer than n bytes, cuts it on
// a rune boundary and appends TruncationMarker so the whole is at most n bytes;
// it reports whether it cut.
func Truncate(s string, n int) (string, bool) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s, false
	}
	cut := max(n-len(TruncationMarker), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + TruncationMarker, true
}

func checkShort(field, v string) error { return fromSpec(agentspec.CheckShort(field, v)) }

// MaxProtocolVersions bounds HELLO's protocol_versions list.
const MaxProtocolVersions = 16

func (h *Hello) validate() error {
	if err := CheckID("payload.agent_id", h.AgentID); err != nil {
		return err
	}
	if len(h.ProtocolVersions) > MaxProtocolVersions {
		return invalid("payload.protocol_versions", fmt.Sprintf("more than %d entries", MaxProtocolVersions))
	}
	for _, v := range h.ProtocolVersions {
		if v < 1 {
			return invalid("payload.protocol_versions", "entries must be positive integers")
		}
	}
	for _, f := range []struct{ name, v string }{{"site", h.Site}, {"version", h.Version}, {"hostname", h.Hostname}, {"os", h.OS}, {"arch", h.Arch}} {
		if err := checkShort("payload."+f.name, f.v); err != nil {
			return err
		}
	}
	if err := agentspec.CheckCapabilities("payload.capabilities", h.Capabilities); err != nil {
		return fromSpec(err)
	}
	return fromSpec(agentspec.CheckLabels("payload.labels", h.Labels))
}

func (h *Heartbeat) validate() error {
	switch h.Status {
	case HealthHealthy, HealthDegraded, HealthUnhealthy:
	default:
		return invalid("payload.status", "must be healthy, degraded or unhealthy")
	}
	if h.UptimeS < 0 {
		return invalid("payload.uptime_s", "must not be negative")
	}
	if h.RunningCommands < 0 || h.RunningCommands > MaxRunningCommands {
		return invalid("payload.running_commands", "out of range")
	}
	return nil
}

func (a *Ack) validate() error {
	if err := CheckID("payload.execution_id", a.ExecutionID); err != nil {
		return err
	}
	switch a.State {
	case AckReceived, AckStarted:
		return nil
	}
	return invalid("payload.state", "must be received or started")
}

func (r *CommandResult) validate() error {
	if err := CheckID("payload.execution_id", r.ExecutionID); err != nil {
		return err
	}
	if r.CommandID != "" {
		if err := CheckID("payload.command_id", r.CommandID); err != nil {
			return err
		}
	}
	switch r.Status {
	case ResultSucceeded, ResultFailed:
	default:
		return invalid("payload.status", "must be succeeded or failed")
	}
	// Too long a text is stored cut, never refused: refusing a result the
	// agent re-sends after every reconnect would lock it out for good.
	var cut bool
	if r.Output, cut = Truncate(r.Output, MaxOutputBytes); cut {
		r.OutputTruncated = true
	}
	r.Error, _ = Truncate(r.Error, MaxErrorBytes)
	return nil
}

// ValidateHello checks a HELLO payload (also the identity fields of an
// enrollment request) by the rules Decode applies.
func ValidateHello(h *Hello) error { return h.validate() }
