package gateway

import (
	"context"
	"time"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// endedMemory is how long a revocation is remembered for the handshakes that
// authenticated before it and register after it.
const endedMemory = time.Minute

// handleEnded applies an admin's revocation or deletion of an agent: the
// credential this gateway may have cached is dropped and the agent's session
// here is closed.
func (g *Gateway) handleEnded(payload []byte) {
	e, err := bus.DecodeAgentEnded(payload)
	if err != nil {
		g.log.WithError(err).Warn("dropping malformed agents message")
		return
	}
	g.issued.forget(e.AgentID)
	g.mu.Lock()
	g.ended[e.AgentID] = time.Now()
	s := g.sessions[e.AgentID]
	g.mu.Unlock()
	if s != nil {
		g.metrics.closed.WithLabelValues("revoked").Inc()
		s.close(protocol.ClosePolicyViolation, e.Reason)
	}
}

// endedSince reports whether an admin revoked or deleted agentID after t.
func (g *Gateway) endedSince(agentID string, t time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	at, ok := g.ended[agentID]
	return ok && !at.Before(t)
}

// forgetEnded drops revocations older than endedMemory.
func (g *Gateway) forgetEnded(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, at := range g.ended {
		if now.Sub(at) > endedMemory {
			delete(g.ended, id)
		}
	}
}

func (g *Gateway) handleDelivery(ctx context.Context, payload []byte) {
	items, err := bus.DecodeDeliveries(payload)
	if err != nil {
		g.log.WithError(err).Warn("dropping malformed bus delivery")
		return
	}
	var undelivered []bus.Delivery
	for _, d := range items {
		if !g.deliver(d) && d.ExecutionID != "" {
			undelivered = append(undelivered, d)
		}
	}
	// Tell the schedulers at once so they re-route instead of waiting for the ack deadline.
	for _, d := range undelivered {
		g.send.Wake(ctx, bus.Wake{Reason: bus.WakeUndelivered, AgentID: d.AgentID, ExecutionID: d.ExecutionID})
	}
}

// deliver hands one delivery to its session; false when the agent's session is not here.
func (g *Gateway) deliver(d bus.Delivery) bool {
	s := g.lookup(d.AgentID)
	if d.Kick {
		if s != nil && s.id == d.SessionID {
			s.close(protocol.ClosePolicyViolation, "replaced by a newer session")
		}
		return true
	}
	if s != nil && (d.SessionID == "" || d.SessionID == s.id) && s.send(d.Frame) {
		g.metrics.delivered.Inc()
		return true
	}
	g.metrics.undelivered.Inc()
	return false
}
