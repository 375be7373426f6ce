package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/store"
)

// PreviewStore resolves a command's targets without creating anything.
type PreviewStore interface {
	MatchTargets(ctx context.Context, t store.Targeting) ([]store.Agent, error)
}

// maxPreviewAgents bounds the agents a preview lists (the counts cover all).
const maxPreviewAgents = 100

// PreviewAgent is one agent a command would target.
type PreviewAgent struct {
	ID       string `json:"id"`
	Status   string `json:"status"` // online, stale or offline (as GET /agents/{id}/health's state)
	Site     string `json:"site"`
	Hostname string `json:"hostname"`
}

// PreviewView is the answer of POST /commands/preview: how many registered
// agents the targeting matches, by state, and the first of them by id.
type PreviewView struct {
	Mode            string         `json:"mode"`
	Matched         int            `json:"matched"`
	Online          int            `json:"online"`
	Stale           int            `json:"stale"`
	Offline         int            `json:"offline"`
	Agents          []PreviewAgent `json:"agents"`
	AgentsTruncated bool           `json:"agents_truncated"`
}

// previewCommand answers which agents a command with this targeting would
// run on, resolved by the same code as POST /commands, storing nothing. The
// body is a command request whose verb and other fields are optional and
// ignored; only the targeting (agent_targets, selector, mode) is validated.
func (s *Server) previewCommand(c *gin.Context) {
	body, ok := s.readBody(c)
	if !ok {
		return
	}
	req, errs := DecodeCommandRequest(body, s.cfg.MaxTargets)
	errs = targetingErrors(errs)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid targeting", errs)
		return
	}
	targeting := store.Targeting{AgentIDs: req.AgentTargets}
	if req.Selector != nil {
		targeting.Selector = &store.Selector{Site: req.Selector.Site, Labels: req.Selector.Labels, Capability: req.Selector.Capability}
	}
	agents, err := s.store.MatchTargets(c.Request.Context(), targeting)
	if s.targetProblem(c, req.Verb, err) {
		return
	}
	if err != nil {
		s.internalError(c, "previewing command targets failed", err)
		return
	}
	v := PreviewView{Mode: req.Mode, Matched: len(agents), Agents: make([]PreviewAgent, 0, min(len(agents), maxPreviewAgents))}
	if v.Mode == "" {
		v.Mode = store.ModeAll
	}
	now := time.Now().UTC()
	for _, a := range agents {
		state := s.agentState(a, now)
		switch state {
		case StateOnline:
			v.Online++
		case StateStale:
			v.Stale++
		default:
			v.Offline++
		}
		if len(v.Agents) < maxPreviewAgents {
			v.Agents = append(v.Agents, PreviewAgent{ID: a.ID, Status: state, Site: a.Site, Hostname: a.Hostname})
		}
	}
	v.AgentsTruncated = len(agents) > len(v.Agents)
	c.JSON(http.StatusOK, v)
}

// targetingErrors keeps the problems of the targeting fields (and of the
// body as a whole): a preview ignores the rest of a command request.
func targetingErrors(errs []FieldError) []FieldError {
	var out []FieldError
	for _, e := range errs {
		switch {
		case e.Field == "body", e.Field == "mode",
			strings.HasPrefix(e.Field, "agent_targets"), strings.HasPrefix(e.Field, "selector"):
			out = append(out, e)
		}
	}
	return out
}

// agentState derives online, stale or offline from the connection status and
// the time the agent was last heard from.
func (s *Server) agentState(a store.Agent, now time.Time) string {
	switch {
	case a.Status != store.AgentOnline:
		return StateOffline
	case a.LastSeenAt == nil || now.Sub(*a.LastSeenAt) > s.cfg.StaleAfter:
		return StateStale
	default:
		return StateOnline
	}
}

// readBody reads a request body of at most MaxBodyBytes; it writes the
// problem and reports false when it cannot.
func (s *Server) readBody(c *gin.Context) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", s.cfg.MaxBodyBytes), nil)
			return nil, false
		}
		writeProblem(c, http.StatusBadRequest, "could not read the request body", nil)
		return nil, false
	}
	return body, true
}
