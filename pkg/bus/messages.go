package bus

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Wake reasons.
const (
	WakeCommand     = "command"     // a command was created
	WakeAgent       = "agent"       // an agent came online
	WakeResult      = "result"      // an execution finished (frees capacity)
	WakeUndelivered = "undelivered" // a gateway could not deliver an execution
)

// Wake is published on TopicScheduler.
type Wake struct {
	Reason      string `json:"reason"`
	CommandID   string `json:"command_id,omitempty"`
	AgentID     string `json:"agent_id,omitempty"`
	ExecutionID string `json:"execution_id,omitempty"`
	// CommandIDs has one entry per result recorded in a gateway's group
	// commit (reason "result"): one wake per batch, not per result.
	CommandIDs []string `json:"command_ids,omitempty"`
}

// AgentEnded is published on TopicAgents when an admin revoked or deleted an
// agent; Reason is told to the agent in the close frame.
type AgentEnded struct {
	AgentID string `json:"agent_id"`
	Reason  string `json:"reason"`
}

// Delivery is published on a gateway's topic: one frame for one agent session,
// or (Kick) the order to close that session because a newer one replaced it.
type Delivery struct {
	AgentID     string          `json:"agent_id"`
	SessionID   string          `json:"session_id,omitempty"`
	ExecutionID string          `json:"execution_id,omitempty"`
	Frame       json.RawMessage `json:"frame,omitempty"`
	Kick        bool            `json:"kick,omitempty"`
}

// Deliveries is the payload on a gateway's topic: everything one dispatch
// round (or one sender) has for that gateway, in one message.
type Deliveries struct {
	Items []Delivery `json:"items"`
}

// encode marshals a bus message; these types always marshal.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("bus: encoding message: " + err.Error())
	}
	return b
}

// DecodeWake parses a TopicScheduler payload. The bus is trusted, but a
// malformed message is an error, never a panic.
func DecodeWake(payload []byte) (Wake, error) {
	var w Wake
	if err := json.Unmarshal(payload, &w); err != nil {
		return Wake{}, fmt.Errorf("decoding wake: %w", err)
	}
	return w, nil
}

// DecodeAgentEnded parses a TopicAgents payload; one without an agent id is malformed.
func DecodeAgentEnded(payload []byte) (AgentEnded, error) {
	var e AgentEnded
	if err := json.Unmarshal(payload, &e); err != nil {
		return AgentEnded{}, fmt.Errorf("decoding agent ended: %w", err)
	}
	if e.AgentID == "" {
		return AgentEnded{}, errors.New("decoding agent ended: no agent_id")
	}
	return e, nil
}

// DecodeDeliveries parses a gateway topic payload.
func DecodeDeliveries(payload []byte) ([]Delivery, error) {
	var ds Deliveries
	if err := json.Unmarshal(payload, &ds); err != nil {
		return nil, fmt.Errorf("decoding deliveries: %w", err)
	}
	return ds.Items, nil
}
