// Package events carries the live event stream of the control plane: agents
// coming online and going offline, command and execution status changes and
// alerts. Roles publish batches of events on the bus topic "events"; every
// api-server subscribes and serves them to clients as Server-Sent Events, so
// any replica serves any client. Delivery is at most once and live only:
// Postgres stays the source of truth, a client that missed events re-reads it.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/bus"
)

// Topic is the bus topic of the event stream.
const Topic = "events"

// Event types.
const (
	AgentOnline     = "agent.online"
	AgentOffline    = "agent.offline"
	AgentUpdated    = "agent.updated" // an admin changed its trusted site or labels
	CommandStatus   = "command.status"
	ExecutionStatus = "execution.status"
	AlertFired      = "alert.fired"
	AlertResolved   = "alert.resolved"
	// AgentEnrollRefused: a gateway refused an enrollment (Reason says why).
	AgentEnrollRefused = "agent.enroll_refused"
	// AgentRevoked, AgentUnrevoked, AgentDeleted: an admin revoked an agent,
	// lifted its enrollment block, or forgot it.
	AgentRevoked   = "agent.revoked"
	AgentUnrevoked = "agent.unrevoked"
	AgentDeleted   = "agent.deleted"
)

// Types lists every event type, for validating filters.
var Types = []string{AgentOnline, AgentOffline, AgentUpdated, CommandStatus, ExecutionStatus, AlertFired, AlertResolved,
	AgentEnrollRefused, AgentRevoked, AgentUnrevoked, AgentDeleted}

// Event is one change. Fields that do not apply to the type are empty.
type Event struct {
	Type        string    `json:"type"`
	At          time.Time `json:"at"`
	AgentID     string    `json:"agent_id,omitempty"`
	CommandID   string    `json:"command_id,omitempty"`
	ExecutionID string    `json:"execution_id,omitempty"`
	Status      string    `json:"status,omitempty"`
	GatewayID   string    `json:"gateway_id,omitempty"`
	AlertID     string    `json:"alert_id,omitempty"`
	RuleID      string    `json:"rule_id,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// batch is the bus payload: the events one publisher produced together.
type batch struct {
	Events []Event `json:"events"`
}

// MaxBatch bounds the events in one bus message; larger sets are split.
const MaxBatch = 1000

// Encode returns the bus payload of evs.
func Encode(evs []Event) []byte {
	b, _ := json.Marshal(batch{Events: evs}) // plain strings and times: cannot fail
	return b
}

// Decode parses a bus payload; the bus is trusted, but a malformed message is an error, never a panic.
func Decode(payload []byte) ([]Event, error) {
	var b batch
	if err := json.Unmarshal(payload, &b); err != nil {
		return nil, fmt.Errorf("decoding events: %w", err)
	}
	return b.Events, nil
}

// Publisher sends events on the bus. A nil *Publisher discards events, so
// roles built without one (unit tests) need no special case.
type Publisher struct {
	bus bus.Bus
	log logrus.FieldLogger
}

// NewPublisher returns a publisher on b.
func NewPublisher(b bus.Bus, log logrus.FieldLogger) *Publisher {
	return &Publisher{bus: b, log: log}
}

// Publish sends evs, stamping those without a time. A failure is logged, not
// returned: the event stream never holds up the work it reports.
func (p *Publisher) Publish(ctx context.Context, evs ...Event) {
	if p == nil || len(evs) == 0 {
		return
	}
	now := time.Now().UTC()
	for i := range evs {
		if evs[i].At.IsZero() {
			evs[i].At = now
		}
	}
	for len(evs) > 0 {
		n := min(len(evs), MaxBatch)
		if _, err := p.bus.Publish(ctx, Topic, Encode(evs[:n])); err != nil {
			p.log.WithError(err).WithField("events", n).Warn("publishing events failed")
			return
		}
		evs = evs[n:]
	}
}

// Agent publishes one event about an agent (the Agent* types); gatewayID and
// reason may be empty.
func (p *Publisher) Agent(ctx context.Context, typ, agentID, gatewayID, reason string) {
	p.Publish(ctx, Event{Type: typ, AgentID: agentID, GatewayID: gatewayID, Reason: reason})
}

// Command publishes a command's new aggregate status.
func (p *Publisher) Command(ctx context.Context, commandID, status string) {
	p.Publish(ctx, Event{Type: CommandStatus, CommandID: commandID, Status: status})
}
