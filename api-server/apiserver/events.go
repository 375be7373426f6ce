package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/viworks/backend-agent/pkg/agentspec"
	"github.com/viworks/backend-agent/pkg/events"
)

// eventWriteTimeout bounds one write to an event stream: a client that stops
// reading is cut off instead of holding a goroutine forever.
const eventWriteTimeout = 10 * time.Second

// streamEvents serves GET /api/v1/events as Server-Sent Events: one `event:`
// per change with its JSON as `data:`, a keep-alive comment every
// KeepAlive, and the end of the stream on shutdown. Filters: type (repeated or
// comma-separated), agent, command. The stream is live only (no replay).
//
// One principal holds at most Events.MaxPerOwner streams per replica (beyond
// it: 429). A stream ends when its token expires, and, for a token exchanged
// for an API key, within EventRevocationCheck of the key's revocation.
func (s *Server) streamEvents(c *gin.Context) {
	f, errs := parseEventFilter(c)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid event filter", errs)
		return
	}
	p := principal(c)
	client, err := s.hub.Subscribe(p.Subject, f)
	if err != nil {
		c.Header("Retry-After", "5")
		switch {
		case errors.Is(err, events.ErrTooManyForOwner):
			writeProblem(c, http.StatusTooManyRequests, fmt.Sprintf("at most %d event streams per principal on this server; close one first", s.cfg.Events.MaxPerOwner), nil)
		case errors.Is(err, events.ErrHubClosed):
			writeProblem(c, http.StatusServiceUnavailable, "the server is shutting down; retry on another replica", nil)
		default:
			writeProblem(c, http.StatusServiceUnavailable, "the event stream is at capacity on this server; retry later", nil)
		}
		return
	}
	defer s.hub.Unsubscribe(client)
	expired := time.NewTimer(time.Until(p.ExpiresAt))
	defer expired.Stop()
	revocation := time.NewTicker(s.cfg.EventRevocationCheck)
	defer revocation.Stop()

	w := c.Writer
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	send := func(chunk string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := w.WriteString(chunk); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("retry: 3000\n: connected\n\n") {
		return
	}
	keepAlive := time.NewTicker(s.cfg.EventKeepAlive)
	defer keepAlive.Stop()
	ctx := c.Request.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expired.C:
			send("event: end\ndata: {\"reason\":\"token expired\"}\n\n")
			return
		case <-revocation.C:
			// A failed check (database briefly unreachable) keeps the stream
			// until the next one; the token's exp still bounds it.
			if revoked, err := s.revoked(ctx, p); err == nil && revoked {
				send("event: end\ndata: {\"reason\":\"token revoked\"}\n\n")
				return
			}
		case <-keepAlive.C:
			if !send(": keep-alive\n\n") {
				return
			}
		case e, ok := <-client.C:
			if !ok {
				// Shutdown or fell behind: end the stream; the client reconnects.
				return
			}
			data, _ := json.Marshal(e)
			if !send(fmt.Sprintf("event: %s\ndata: %s\n\n", e.Type, data)) {
				return
			}
		}
	}
}

func parseEventFilter(c *gin.Context) (events.Filter, []FieldError) {
	var f events.Filter
	var errs []FieldError
	for _, v := range c.QueryArray("type") {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if !slices.Contains(events.Types, t) {
				errs = append(errs, FieldError{Field: "type", Message: "unknown event type; one of " + strings.Join(events.Types, ", ")})
				continue
			}
			if f.Types == nil {
				f.Types = map[string]bool{}
			}
			f.Types[t] = true
		}
	}
	if a := c.Query("agent"); a != "" {
		if err := agentspec.CheckID("agent", a); err != nil {
			errs = append(errs, FieldError{Field: "agent", Message: err.Error()})
		}
		f.AgentID = a
	}
	if id := c.Query("command"); id != "" {
		if _, err := uuid.Parse(id); err != nil {
			errs = append(errs, FieldError{Field: "command", Message: "must be a command id (UUID)"})
		}
		f.CommandID = id
	}
	return f, errs
}
