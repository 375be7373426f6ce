package protocol

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"
)

// decodeReflect is Decode as it was before the hot frames got their own
// scanner (encoding/json and reflection for every frame): the reference
// Decode must match on every input.
func decodeReflect(data []byte) (Frame, error) {
	if !utf8.Valid(data) {
		return Frame{}, &DecodeError{CloseCode: CloseInvalidPayload, Reason: "frame is not valid UTF-8"}
	}
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Frame{}, &DecodeError{CloseCode: CloseInvalidPayload, Reason: "malformed JSON: the frame must be one JSON object with a string type and id"}
	}
	f := Frame{Type: env.Type, ID: env.ID}
	if len(env.ID) > MaxIDLen {
		return f, invalid("id", fmt.Sprintf("longer than %d bytes", MaxIDLen))
	}
	var p interface{ validate() error }
	switch env.Type {
	case TypeHello:
		p = &Hello{}
	case TypeHeartbeat:
		p = &Heartbeat{}
	case TypeTelemetry:
		t, dropped, err := decodeTelemetryReflect(env.Payload)
		f.Dropped = dropped
		if err != nil {
			return f, err
		}
		f.Payload = t
		return f, nil
	case TypeAck:
		p = &Ack{}
	case TypeCommandResult:
		p = &CommandResult{}
	case "":
		return f, invalid("type", "is required")
	default:
		return f, fmt.Errorf("%w %q", ErrUnknownType, truncate(env.Type, 64))
	}
	if err := decodeFields("payload", env.Payload, p); err != nil {
		return f, err
	}
	if err := p.validate(); err != nil {
		return f, err
	}
	f.Payload = p
	return f, nil
}

// telemetryWire is TELEMETRY as received: each metric is checked on its own.
type telemetryWire struct {
	TS      time.Time                  `json:"ts"`
	Metrics map[string]json.RawMessage `json:"metrics"`
}

// decodeTelemetryReflect keeps the metrics that are numbers and lists the others as
// dropped; a frame left without metrics is refused.
func decodeTelemetryReflect(raw json.RawMessage) (*Telemetry, []*DecodeError, error) {
	var w telemetryWire
	if err := decodeFields("payload", raw, &w); err != nil {
		return nil, nil, err
	}
	if w.TS.IsZero() {
		return nil, nil, invalid("payload.ts", "is required")
	}
	if len(w.Metrics) == 0 {
		return nil, nil, invalid("payload.metrics", "is required")
	}
	if len(w.Metrics) > MaxMetrics {
		return nil, nil, invalid("payload.metrics", fmt.Sprintf("more than %d entries", MaxMetrics))
	}
	t := &Telemetry{TS: w.TS, Metrics: make(map[string]float64, len(w.Metrics))}
	var dropped []*DecodeError
	for _, name := range slices.Sorted(maps.Keys(w.Metrics)) {
		field := "payload.metrics." + truncate(name, 64)
		var v float64
		switch {
		case name == "" || len(name) > MaxShortFieldLen:
			dropped = append(dropped, invalid("payload.metrics", fmt.Sprintf("names must be 1..%d bytes", MaxShortFieldLen)))
		case json.Unmarshal(w.Metrics[name], &v) != nil:
			dropped = append(dropped, invalid(field, "a number is required"))
		default:
			t.Metrics[name] = v
		}
	}
	if len(t.Metrics) == 0 {
		return nil, dropped, dropped[0]
	}
	return t, dropped, nil
}
