package gateway

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/viworks/backend-agent/pkg/problem"
	"github.com/viworks/backend-agent/pkg/store"
)

// Handshake admission: a request waits up to admitWait for one of
// MaxHandshakes slots, with at most admitQueue waiting per slot; beyond that it
// gets 503 with Retry-After and the agent backs off with jitter. So a storm is
// admitted at the rate the database sustains and never reaches it unthrottled.
const (
	admitWait  = 2 * time.Second
	admitQueue = 4
)

func (g *Gateway) admit(w http.ResponseWriter) (release func(), ok bool) {
	if g.waiting.Add(1) > int64(admitQueue*cap(g.admission)) {
		g.waiting.Add(-1)
		return nil, g.busy(w)
	}
	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case g.admission <- struct{}{}:
		g.waiting.Add(-1)
		g.admitted.Add(1)
		var once sync.Once
		return func() { once.Do(func() { <-g.admission }) }, true
	case <-t.C:
		g.waiting.Add(-1)
		return nil, g.busy(w)
	}
}

func (g *Gateway) busy(w http.ResponseWriter) bool {
	g.metrics.rejected.WithLabelValues("busy").Inc()
	w.Header().Set("Retry-After", "1")
	problem.Write(w, http.StatusServiceUnavailable, "too many agents are connecting at once; retry shortly", "", nil)
	return false
}

func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	started := time.Now()
	release, ok := g.admit(w)
	if !ok {
		return
	}
	handedOver := false
	defer func() {
		if !handedOver {
			release()
		}
	}()
	agentID, err := g.authenticate(r)
	if err != nil {
		if !errors.Is(err, store.ErrUnknownCredential) {
			g.log.WithError(err).Error("checking agent credential failed")
			w.Header().Set("Retry-After", "5")
			problem.Write(w, http.StatusServiceUnavailable, "could not check the credential; retry later", r.URL.Path, nil)
			return
		}
		g.metrics.rejected.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="agents"`)
		problem.Write(w, http.StatusUnauthorized, "a valid agent credential is required in the Authorization header; enroll at /agent/v1/enroll", r.URL.Path, nil)
		return
	}
	// Sessions and handshakes under way both count against the capacity:
	// a burst of upgrades cannot all pass the check before any registers.
	slot, full, draining := g.reserve()
	if full || draining {
		g.metrics.rejected.WithLabelValues("capacity").Inc()
		w.Header().Set("Retry-After", "5")
		problem.Write(w, http.StatusServiceUnavailable, "this gateway accepts no more agents; retry later", r.URL.Path, nil)
		return
	}
	admitted := release
	release = func() {
		admitted()
		slot.free()
	}
	conn, br, err := g.upgrade(w, r)
	if err != nil {
		return // the upgrader has answered
	}
	handedOver = true
	remote := r.RemoteAddr
	ctx := g.base // not the request's: a session outlives it and must not keep it alive
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		s := newSession(g, conn, br, remote, agentID)
		s.slot = slot
		if !s.handshake(ctx, release, started) {
			return
		}
		// The handshake's database calls grew this goroutine's stack; a fresh
		// goroutine, with a small stack, holds the session for its lifetime.
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			s.serve(ctx)
		}()
	}()
}

// slot is one session's place under max_agent_connections, held from the
// capacity check until the session is attached (then its entry in sessions
// counts) or its handshake fails.
type slot struct {
	g    *Gateway
	held bool // guarded by g.mu
}

// reserve takes a slot unless the gateway is full or draining: sessions and
// handshakes under way both count, so a burst of upgrades cannot all pass the
// check before any is attached.
func (g *Gateway) reserve() (s *slot, full, draining bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	full = len(g.sessions)+g.opening >= g.cfg.MaxConnections
	if full || g.draining {
		return nil, full, g.draining
	}
	g.opening++
	return &slot{g: g, held: true}, false, false
}

// free gives the slot back if attach has not taken it over; it may be called
// more than once.
func (s *slot) free() {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	s.freeLocked()
}

func (s *slot) freeLocked() {
	if s != nil && s.held {
		s.held = false
		s.g.opening--
	}
}
