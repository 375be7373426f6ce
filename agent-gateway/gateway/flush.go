package gateway

import (
	"context"
	"sync"
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

// Telemetry buffering. Samples wait in memory for the next COPY; while one is
// in flight the next batch grows (a group commit), so the batch size follows
// the load and a lone sample waits at most one flush interval.
const (
	// maxCopyRows bounds one COPY: a failed one loses at most this many.
	maxCopyRows = 20000
	// minTelemetryBound is the least number of samples held for the database.
	minTelemetryBound = 100000
	// finalFlushTimeout bounds the last telemetry write when the gateway stops.
	finalFlushTimeout = 10 * time.Second
)

// telemetryBound is how many samples the gateway holds at most: 100 batches,
// at least minTelemetryBound. Beyond it the oldest are shed (counted), so a
// database that cannot keep up costs samples, never unbounded memory.
func (c Config) telemetryBound() int { return max(minTelemetryBound, 100*c.TelemetryBatch) }

// telemetryBuffer holds the samples not yet written. One flusher writes them
// at a time (flushMu), so the graceful stop's flush waits for a COPY in
// flight and then writes the rest.
type telemetryBuffer struct {
	mu      sync.Mutex
	rows    []store.TelemetrySample
	kick    chan struct{} // a batch is ready
	flushMu sync.Mutex
}

func newTelemetryBuffer() telemetryBuffer {
	return telemetryBuffer{kick: make(chan struct{}, 1)}
}

func (g *Gateway) addTelemetry(s store.TelemetrySample) {
	b := &g.tel
	b.mu.Lock()
	if bound := g.cfg.telemetryBound(); len(b.rows) >= bound {
		// Shed the oldest batch at once: one move per batch, not per sample.
		n := min(len(b.rows), g.cfg.TelemetryBatch)
		copy(b.rows, b.rows[n:])
		clear(b.rows[len(b.rows)-n:])
		b.rows = b.rows[:len(b.rows)-n]
		g.metrics.telemetryShed.Add(float64(n))
	}
	b.rows = append(b.rows, s)
	n := len(b.rows)
	b.mu.Unlock()
	if n >= g.cfg.TelemetryBatch {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// flushLoop runs the periodic work (heartbeats, presence, the signing key,
// sweeps) on its own goroutine and is itself the telemetry flusher: a slow
// heartbeat write never holds telemetry back, nor the reverse. On the way out
// it writes the telemetry it still holds.
func (g *Gateway) flushLoop(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.periodicLoop(ctx)
	}()
	defer wg.Wait()
	t := time.NewTicker(g.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			g.flushTelemetry(fctx)
			cancel()
			return
		case <-t.C:
			g.flushTelemetry(ctx)
		case <-g.tel.kick:
			g.flushTelemetry(ctx)
		}
	}
}

// periodicLoop writes heartbeats and refreshes presence, the signing key and
// the caches every flush interval.
func (g *Gateway) periodicLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.flushHeartbeats(ctx)
			g.refreshKey(ctx)
			g.issued.sweep(time.Now())
			g.forgetEnded(time.Now())
		}
	}
}

// flush writes everything pending: heartbeats, then telemetry (the graceful
// stop's last write).
func (g *Gateway) flush(ctx context.Context) {
	g.flushHeartbeats(ctx)
	g.flushTelemetry(ctx)
}

func (g *Gateway) flushHeartbeats(ctx context.Context) {
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

// flushTelemetry writes every buffered sample, in COPYs of at most
// maxCopyRows; samples that arrive meanwhile wait for the next flush. A failed
// COPY's samples are dropped (counted): telemetry is never acknowledged, and
// a retried batch would hold back the newer ones.
func (g *Gateway) flushTelemetry(ctx context.Context) {
	b := &g.tel
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	batch := b.rows
	b.rows = nil
	b.mu.Unlock()
	for len(batch) > 0 {
		chunk := batch[:min(len(batch), maxCopyRows)]
		batch = batch[len(chunk):]
		start := time.Now()
		err := g.store.InsertTelemetry(ctx, chunk)
		g.metrics.flush.WithLabelValues("telemetry").Observe(time.Since(start).Seconds())
		if err != nil {
			g.metrics.telemetryDropped.Add(float64(len(chunk)))
			g.log.WithError(err).WithField("samples", len(chunk)).Error("flushing telemetry failed")
			continue
		}
		g.metrics.telemetryStored.Add(float64(len(chunk)))
	}
}
