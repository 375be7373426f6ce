package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

// AgentHealth is an agent's latest heartbeat.
type AgentHealth struct {
	Status  string `json:"status"`
	UptimeS int64  `json:"uptime_s"`
}

// AgentView is the API shape of an agent (DESIGN §4).
type AgentView struct {
	ID           string            `json:"id"`
	Status       string            `json:"status"`
	Site         string            `json:"site"`
	Version      string            `json:"version"`
	Capabilities []string          `json:"capabilities"`
	Labels       map[string]string `json:"labels"`
	Hostname     string            `json:"hostname"`
	OS           string            `json:"os"`
	Arch         string            `json:"arch"`
	GatewayID    string            `json:"gateway_id"`
	ConnectedAt  *time.Time        `json:"connected_at"`
	LastSeenAt   *time.Time        `json:"last_seen_at"`
	Health       AgentHealth       `json:"health"`
}

func agentView(a store.Agent) AgentView {
	caps := []string(a.Capabilities)
	if caps == nil {
		caps = []string{}
	}
	labels := map[string]string(a.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	return AgentView{
		ID: a.ID, Status: a.Status, Site: a.Site, Version: a.Version, Capabilities: caps, Labels: labels,
		Hostname: a.Hostname, OS: a.OS, Arch: a.Arch, GatewayID: a.GatewayID,
		ConnectedAt: a.ConnectedAt, LastSeenAt: a.LastSeenAt,
		Health: AgentHealth{Status: a.HealthStatus, UptimeS: a.UptimeS},
	}
}

// List is the envelope of every list response.
type List[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

const (
	defaultLimit = 50
	maxLimit     = 1000
)

func parseLimit(c *gin.Context) (int, *FieldError) {
	raw := c.Query("limit")
	if raw == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > maxLimit {
		return 0, &FieldError{Field: "limit", Message: "must be an integer from 1 to 1000"}
	}
	return n, nil
}

// Bounds of the agent list filters.
const (
	maxFilterLen    = 256 // site, capability, label keys and values
	maxFilterLabels = 32
)

// parseAgentFilter reads the filters of GET /agents: status, site, label
// (k=v, repeatable; all must match), capability, q (id prefix).
func parseAgentFilter(c *gin.Context) (store.AgentFilter, []FieldError) {
	var f store.AgentFilter
	var errs []FieldError
	f.Status = c.Query("status")
	if f.Status != "" && f.Status != store.AgentOnline && f.Status != store.AgentOffline {
		errs = append(errs, FieldError{Field: "status", Message: "must be online or offline"})
	}
	f.Site = c.Query("site")
	if len(f.Site) > maxFilterLen {
		errs = append(errs, FieldError{Field: "site", Message: "longer than 256 bytes"})
	}
	f.Capability = c.Query("capability")
	if len(f.Capability) > maxFilterLen {
		errs = append(errs, FieldError{Field: "capability", Message: "longer than 256 bytes"})
	}
	labels := c.QueryArray("label")
	if len(labels) > maxFilterLabels {
		errs = append(errs, FieldError{Field: "label", Message: fmt.Sprintf("at most %d labels", maxFilterLabels)})
		labels = nil
	}
	if msg := parseLabels(labels, &f); msg != "" {
		errs = append(errs, FieldError{Field: "label", Message: msg})
	}
	if q, ok := c.GetQuery("q"); ok {
		if protocol.CheckID("", q) != nil {
			errs = append(errs, FieldError{Field: "q", Message: "must be an id prefix of " + protocol.IDRule})
		}
		f.IDPrefix = q
	}
	f.After = c.Query("cursor")
	if len(f.After) > 256 {
		errs = append(errs, FieldError{Field: "cursor", Message: "too long"})
	}
	return f, errs
}

// parseLabels fills f.Labels from key=value items, or names the first problem.
func parseLabels(items []string, f *store.AgentFilter) string {
	for _, l := range items {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return "must be key=value"
		}
		if len(k) > maxFilterLen || len(v) > maxFilterLen {
			return "keys and values are at most 256 bytes"
		}
		if old, dup := f.Labels[k]; dup && old != v {
			return "key " + k + " is given twice with different values"
		}
		if f.Labels == nil {
			f.Labels = map[string]string{}
		}
		f.Labels[k] = v
	}
	return ""
}

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
	agents, err := s.store.ListAgents(c.Request.Context(), f)
	if err != nil {
		s.internalError(c, "listing agents failed", err)
		return
	}
	out := List[AgentView]{Items: make([]AgentView, 0, min(len(agents), limit))}
	for i, a := range agents {
		if i == limit {
			next := agents[limit-1].ID
			out.NextCursor = &next
			break
		}
		out.Items = append(out.Items, agentView(a))
	}
	c.JSON(http.StatusOK, out)
}

// agent loads the agent named by the :id path parameter, answering 404 when
// there is none; ok is false when a response was written.
func (s *Server) agent(c *gin.Context) (store.Agent, bool) {
	id := c.Param("id")
	if protocol.CheckID("", id) != nil {
		writeProblem(c, http.StatusNotFound, "no agent with this id", nil)
		return store.Agent{}, false
	}
	a, err := s.store.GetAgent(c.Request.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(c, http.StatusNotFound, "no agent with this id", nil)
		return a, false
	}
	if err != nil {
		s.internalError(c, "getting agent failed", err)
		return a, false
	}
	return a, true
}

func (s *Server) getAgent(c *gin.Context) {
	if a, ok := s.agent(c); ok {
		c.JSON(http.StatusOK, agentView(a))
	}
}

// Derived agent states of GET /agents/{id}/health.
const (
	StateOnline  = "online"  // connected and heard from within the stale threshold
	StateStale   = "stale"   // connected, but no heartbeat within the stale threshold
	StateOffline = "offline" // not connected
)

// AgentHealthView is the answer of GET /agents/{id}/health.
type AgentHealthView struct {
	AgentID            string      `json:"agent_id"`
	State              string      `json:"state"`  // online, stale or offline
	Status             string      `json:"status"` // the connection status: online or offline
	Health             AgentHealth `json:"health"` // from the latest heartbeat
	LastSeenAt         *time.Time  `json:"last_seen_at"`
	SecondsSinceSeen   *float64    `json:"seconds_since_seen"`
	HeartbeatIntervalS float64     `json:"heartbeat_interval_s"`
	StaleAfterS        float64     `json:"stale_after_s"`
}

func (s *Server) agentHealth(c *gin.Context) {
	a, ok := s.agent(c)
	if !ok {
		return
	}
	now := time.Now().UTC()
	v := AgentHealthView{
		AgentID: a.ID, Status: a.Status, Health: AgentHealth{Status: a.HealthStatus, UptimeS: a.UptimeS},
		LastSeenAt: a.LastSeenAt, HeartbeatIntervalS: s.cfg.HeartbeatInterval.Seconds(), StaleAfterS: s.cfg.StaleAfter.Seconds(),
	}
	if a.LastSeenAt != nil {
		since := max(now.Sub(*a.LastSeenAt).Seconds(), 0)
		v.SecondsSinceSeen = &since
	}
	switch {
	case a.Status != store.AgentOnline:
		v.State = StateOffline
	case v.SecondsSinceSeen == nil || *v.SecondsSinceSeen > s.cfg.StaleAfter.Seconds():
		v.State = StateStale
	default:
		v.State = StateOnline
	}
	c.JSON(http.StatusOK, v)
}
