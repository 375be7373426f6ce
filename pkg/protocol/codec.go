package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
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

// DecodeError is a frame that cannot be accepted; CloseCode says how to close.
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

func invalid(field, reason string) *DecodeError {
	return &DecodeError{CloseCode: ClosePolicyViolation, Field: field, Reason: reason}
}

// Frame is a decoded, validated frame: Type plus one typed payload.
type Frame struct {
	Type    string
	ID      string
	Payload any
}

// Decode parses and validates one frame sent by an agent. Malformed JSON yields a
// DecodeError with close code 1007, an invalid payload one with 1008, and an
// unknown type ErrUnknownType (wrapped, with the envelope's Type still set).
func Decode(data []byte) (Frame, error) {
	if !utf8.Valid(data) {
		return Frame{}, &DecodeError{CloseCode: CloseInvalidPayload, Reason: "frame is not valid UTF-8"}
	}
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Frame{}, &DecodeError{CloseCode: CloseInvalidPayload, Reason: "malformed JSON: " + err.Error()}
	}
	f := Frame{Type: env.Type, ID: env.ID}
	if len(env.ID) > MaxIDLen {
		return f, invalid("id", "too long")
	}
	var p interface{ validate() error }
	switch env.Type {
	case TypeHello:
		p = &Hello{}
	case TypeHeartbeat:
		p = &Heartbeat{}
	case TypeTelemetry:
		p = &Telemetry{}
	case TypeAck:
		p = &Ack{}
	case TypeCommandResult:
		p = &CommandResult{}
	case "":
		return f, invalid("type", "is required")
	default:
		return f, fmt.Errorf("%w %q", ErrUnknownType, truncate(env.Type, 64))
	}
	if len(env.Payload) == 0 || string(env.Payload) == "null" {
		return f, invalid("payload", "is required")
	}
	if err := json.Unmarshal(env.Payload, p); err != nil {
		return f, &DecodeError{CloseCode: CloseInvalidPayload, Field: "payload", Reason: "malformed: " + err.Error()}
	}
	if err := p.validate(); err != nil {
		return f, err
	}
	f.Payload = p
	return f, nil
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

// CheckID is the rule for every identifier on the wire (agent, execution,
// command ids, nonces): 1..MaxIDLen bytes without whitespace or control
// characters. field names it in the error ("" for none).
func CheckID(field, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if len(v) > MaxIDLen {
		return invalid(field, fmt.Sprintf("is longer than %d bytes", MaxIDLen))
	}
	for _, r := range v {
		if r <= ' ' || r == 0x7f {
			return invalid(field, "contains whitespace or control characters")
		}
	}
	return nil
}

func checkShort(field, v string) error {
	if len(v) > MaxShortFieldLen {
		return invalid(field, fmt.Sprintf("longer than %d bytes", MaxShortFieldLen))
	}
	return nil
}

func (h *Hello) validate() error {
	if err := CheckID("payload.agent_id", h.AgentID); err != nil {
		return err
	}
	for name, v := range map[string]string{"site": h.Site, "version": h.Version, "hostname": h.Hostname, "os": h.OS, "arch": h.Arch} {
		if err := checkShort("payload."+name, v); err != nil {
			return err
		}
	}
	if len(h.Capabilities) > MaxCapabilities {
		return invalid("payload.capabilities", fmt.Sprintf("more than %d entries", MaxCapabilities))
	}
	for _, c := range h.Capabilities {
		if c == "" || len(c) > MaxShortFieldLen {
			return invalid("payload.capabilities", "entries must be 1..256 bytes")
		}
	}
	if len(h.Labels) > MaxLabels {
		return invalid("payload.labels", fmt.Sprintf("more than %d entries", MaxLabels))
	}
	for k, v := range h.Labels {
		if k == "" || len(k) > MaxShortFieldLen || len(v) > MaxShortFieldLen {
			return invalid("payload.labels", "keys must be 1..256 bytes, values at most 256")
		}
	}
	return nil
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

func (t *Telemetry) validate() error {
	if t.TS.IsZero() {
		return invalid("payload.ts", "is required")
	}
	if len(t.Metrics) == 0 {
		return invalid("payload.metrics", "is required")
	}
	if len(t.Metrics) > MaxMetrics {
		return invalid("payload.metrics", fmt.Sprintf("more than %d entries", MaxMetrics))
	}
	for k := range t.Metrics {
		if k == "" || len(k) > MaxShortFieldLen {
			return invalid("payload.metrics", "names must be 1..256 bytes")
		}
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
	if len(r.Output) > MaxOutputBytes {
		return invalid("payload.output", fmt.Sprintf("longer than %d bytes", MaxOutputBytes))
	}
	if len(r.Error) > MaxErrorBytes {
		return invalid("payload.error", fmt.Sprintf("longer than %d bytes", MaxErrorBytes))
	}
	return nil
}

// ValidateHello checks a HELLO payload (also the identity fields of an
// enrollment request) by the rules Decode applies.
func ValidateHello(h *Hello) error { return h.validate() }
