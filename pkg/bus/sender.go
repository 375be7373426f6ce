package bus

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// Sender is how the roles publish: one method per message, each owning its
// topic and encoding, in front of the Bus (as a Centrifuge Node is in front of
// its broker). The best-effort messages log their failure here, in one place:
// Postgres stays the truth, and the sweeps repair what a lost message leaves
// undone.
type Sender struct {
	bus Bus
	log logrus.FieldLogger
}

// NewSender returns a sender on b.
func NewSender(b Bus, log logrus.FieldLogger) *Sender {
	return &Sender{bus: b, log: log}
}

// Wake wakes the schedulers (work arrived, an agent came online, an execution
// finished or was not delivered). Best effort: the schedulers' periodic sweep
// finds the work anyway.
func (s *Sender) Wake(ctx context.Context, w Wake) {
	if _, err := s.bus.Publish(ctx, TopicScheduler, encode(w)); err != nil {
		log := s.log.WithError(err).WithField("reason", w.Reason)
		for k, v := range map[string]string{"command_id": w.CommandID, "agent_id": w.AgentID, "execution_id": w.ExecutionID} {
			if v != "" {
				log = log.WithField(k, v)
			}
		}
		log.Warn("waking schedulers failed")
	}
}

// AgentEnded tells every gateway that an admin revoked or deleted the agent:
// each drops what it cached of the credential and closes the agent's session
// with reason. The credential is dead in the database already; a failure
// (logged as an error) leaves a live session open until it reconnects.
func (s *Sender) AgentEnded(ctx context.Context, agentID, reason string) {
	if _, err := s.bus.Publish(ctx, TopicAgents, encode(AgentEnded{AgentID: agentID, Reason: reason})); err != nil {
		s.log.WithError(err).WithField("agent_id", agentID).Error("telling gateways to close the agent's session failed")
	}
}

// Deliver sends items to one gateway in one message and returns how many
// subscribers received it: 0 means that gateway is gone, and the caller (the
// scheduler, which knows what to put back) decides what follows.
func (s *Sender) Deliver(ctx context.Context, gatewayID string, items ...Delivery) (int, error) {
	return s.bus.Publish(ctx, GatewayTopic(gatewayID), encode(Deliveries{Items: items}))
}

// Cancel sends a CANCEL frame for an execution to the gateway holding its
// agent. Best effort: an execution that is not stopped ends at its deadline,
// and its late result is refused.
func (s *Sender) Cancel(ctx context.Context, gatewayID, agentID, executionID, reason string) {
	frame, err := protocol.Encode(protocol.TypeCancel, "", protocol.Cancel{ExecutionID: executionID, Reason: reason})
	if err == nil {
		_, err = s.Deliver(ctx, gatewayID, Delivery{AgentID: agentID, Frame: frame})
	}
	if err != nil {
		s.log.WithError(err).WithFields(logrus.Fields{"execution_id": executionID, "gateway_id": gatewayID}).Warn("sending cancel failed")
	}
}

// Kick tells the gateway holding an agent's older session to close it: a newer
// session of the agent registered elsewhere. Best effort: the old gateway also
// finds its presence replaced at its next heartbeat flush.
func (s *Sender) Kick(ctx context.Context, gatewayID, agentID, sessionID string) {
	if _, err := s.Deliver(ctx, gatewayID, Delivery{AgentID: agentID, SessionID: sessionID, Kick: true}); err != nil {
		s.log.WithError(err).WithFields(logrus.Fields{"agent_id": agentID, "gateway_id": gatewayID}).Warn("telling the previous gateway to drop the old session failed")
	}
}
