package gateway

import (
	"context"
	"time"
)

// attach makes s the agent's current session, returning the one it replaces.
func (g *Gateway) attach(s *session) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.sessions[s.agentID]
	g.sessions[s.agentID] = s
	s.slot.freeLocked() // from now on the entry in sessions counts
	g.metrics.sessions.Set(float64(len(g.sessions)))
	return old
}

// detach removes s if it is still the agent's current session.
func (g *Gateway) detach(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sessions[s.agentID] != s {
		return false
	}
	delete(g.sessions, s.agentID)
	g.metrics.sessions.Set(float64(len(g.sessions)))
	return true
}

func (g *Gateway) lookup(agentID string) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[agentID]
}

// pingLoop pings every session once per heartbeat interval from one goroutine.
func (g *Gateway) pingLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.mu.Lock()
		all := make([]*session, 0, len(g.sessions))
		for _, s := range g.sessions {
			all = append(all, s)
		}
		g.mu.Unlock()
		for _, s := range all {
			s.ping()
		}
	}
}
