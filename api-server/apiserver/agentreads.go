package apiserver

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
)

// listAgents answers GET /agents from the read cache (s.reads): each
// distinct query reads the database at most once per ReadCacheTTL on this
// replica, and sooner when an agent event arrives (invalidateOnAgentEvents).
func (s *Server) listAgents(c *gin.Context) {
	f, errs := parseAgentFilter(c)
	limit, ferr := parseLimit(c)
	if ferr != nil {
		errs = append(errs, *ferr)
	}
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid query parameters", errs)
		return
	}
	f.Limit = limit + 1
	read := func(ctx context.Context) ([]byte, error) {
		agents, err := s.store.ListAgents(ctx, f)
		if err != nil {
			return nil, err
		}
		next := ""
		if len(agents) > limit {
			agents = agents[:limit]
			next = encodeAgentCursor(agents[limit-1].ID)
		}
		return agentListJSON(agents, next)
	}
	var body []byte
	var err error
	if s.reads != nil {
		body, err = s.reads.Get(c.Request.Context(), c.Request.URL.RawQuery, read)
	} else {
		body, err = read(c.Request.Context())
	}
	if err != nil {
		s.internalError(c, "listing agents failed", err)
		return
	}
	c.Data(http.StatusOK, jsonContentType, body)
}

// agentChanged is what this replica does after it changed an agent itself:
// its own next list shows the change (other replicas learn of it by the
// event, or within ReadCacheTTL).
func (s *Server) agentChanged() {
	if s.reads != nil {
		s.reads.Invalidate()
	}
}

// agentEventMark is in every bus message holding an agent event (and, rarely,
// in others: that only empties the cache once more).
var agentEventMark = []byte(`"type":"` + strings.TrimSuffix(events.AgentOnline, "online"))

// invalidateOnAgentEvents empties the read cache whenever an agent event
// (online, offline, updated, revoked, deleted, ...) arrives on the bus, until
// ctx is done. While the bus is unreachable, and for events lost on the way
// (delivery is at most once), the TTL alone bounds staleness; the cache is
// emptied again on every resubscription.
func (s *Server) invalidateOnAgentEvents(ctx context.Context, retry time.Duration) {
	for ctx.Err() == nil {
		sub, err := s.bus.Subscribe(ctx, events.Topic)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WithError(err).Warn("subscribing to agent events for the read cache failed; retrying")
			}
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
			continue
		}
		s.reads.Invalidate() // events may have been missed while unsubscribed
		s.receiveAgentEvents(ctx, sub.Messages())
		_ = sub.Close()
	}
}

func (s *Server) receiveAgentEvents(ctx context.Context, msgs <-chan bus.Message) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			if bytes.Contains(m.Payload, agentEventMark) {
				s.reads.Invalidate()
			}
		}
	}
}

// agent loads the agent named by the :id path parameter, answering 404 when
// there is none; ok is false when a response was written.
func (s *Server) agent(c *gin.Context) (store.Agent, bool) {
	id, ok := idParam(c, resAgent)
	if !ok {
		return store.Agent{}, false
	}
	a, err := s.store.GetAgent(c.Request.Context(), id)
	return a, !s.storeFailed(c, resAgent, "getting agent", err)
}

func (s *Server) getAgent(c *gin.Context) {
	if a, ok := s.agent(c); ok {
		s.writeAgent(c, &a)
	}
}
