package gateway

import (
	"context"
	"time"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

func (g *Gateway) noteHealth(u store.HealthUpdate) {
	g.healthMu.Lock()
	g.health[u.AgentID] = u
	g.healthMu.Unlock()
}

func (g *Gateway) addTelemetry(s store.TelemetrySample) {
	g.telMu.Lock()
	g.tel = append(g.tel, s)
	n := len(g.tel)
	g.telMu.Unlock()
	if n >= g.cfg.TelemetryBatch {
		select {
		case g.telKick <- struct{}{}:
		default:
		}
	}
}

func (g *Gateway) flushLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.flush(ctx)
			g.refreshKey(ctx)
			g.issued.sweep(time.Now())
			g.forgetEnded(time.Now())
		case <-g.telKick:
			g.flushTelemetry(ctx)
		}
	}
}

func (g *Gateway) flush(ctx context.Context) {
	g.healthMu.Lock()
	ups := make([]store.HealthUpdate, 0, len(g.health))
	for _, u := range g.health {
		ups = append(ups, u)
	}
	// A new map rather than clear: the old one's buckets, sized for a burst,
	// are not kept for the gateway's lifetime.
	g.health = make(map[string]store.HealthUpdate, len(ups)/2)
	g.healthMu.Unlock()
	if len(ups) > 0 {
		start := time.Now()
		if err := g.store.TouchAgents(ctx, ups); err != nil {
			g.log.WithError(err).WithField("agents", len(ups)).Error("flushing heartbeats failed")
		}
		g.metrics.flush.WithLabelValues("heartbeats").Observe(time.Since(start).Seconds())
	}
	g.refreshPresences(ctx, ups)
	g.flushTelemetry(ctx)
}

// refreshPresences extends the presence of the agents that sent heartbeats,
// in one round trip. An entry found gone (Redis restarted or lost it) is
// registered again; one naming another session means the agent connected
// again elsewhere, so this stale session is closed.
func (g *Gateway) refreshPresences(ctx context.Context, ups []store.HealthUpdate) {
	if len(ups) == 0 {
		return
	}
	sessions := make(map[string]*session, len(ups))
	entries := make(map[string]bus.Entry, len(ups))
	g.mu.Lock()
	for _, u := range ups {
		if s := g.sessions[u.AgentID]; s != nil && s.agentID != "" {
			sessions[u.AgentID], entries[u.AgentID] = s, s.entry
		}
	}
	g.mu.Unlock()
	ttl := g.cfg.silenceLimit()
	got, err := g.presence.RefreshPresences(ctx, entries, ttl)
	if err != nil {
		g.log.WithError(err).WithField("agents", len(entries)).Warn("refreshing presence failed")
		return
	}
	for id, r := range got {
		switch r {
		case bus.Missing:
			if _, err := g.presence.SetPresence(ctx, id, entries[id], ttl); err != nil {
				g.log.WithError(err).WithField("agent_id", id).Warn("registering presence again failed")
				continue
			}
			g.metrics.presenceHealed.Inc()
		case bus.Replaced:
			sessions[id].close(protocol.ClosePolicyViolation, "replaced by a newer session")
		}
	}
}

func (g *Gateway) flushTelemetry(ctx context.Context) {
	g.telMu.Lock()
	batch := g.tel
	g.tel = nil
	g.telMu.Unlock()
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	err := g.store.InsertTelemetry(ctx, batch)
	g.metrics.flush.WithLabelValues("telemetry").Observe(time.Since(start).Seconds())
	if err != nil {
		g.metrics.telemetryDropped.Add(float64(len(batch)))
		g.log.WithError(err).WithField("samples", len(batch)).Error("flushing telemetry failed")
		return
	}
	g.metrics.telemetryStored.Add(float64(len(batch)))
}
