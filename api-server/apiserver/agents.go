package apiserver

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

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

func (s *Server) listAgents(c *gin.Context) {
	var errs []FieldError
	limit, ferr := parseLimit(c)
	if ferr != nil {
		errs = append(errs, *ferr)
	}
	status := c.Query("status")
	if status != "" && status != store.AgentOnline && status != store.AgentOffline {
		errs = append(errs, FieldError{Field: "status", Message: "must be online or offline"})
	}
	cursor := c.Query("cursor")
	if len(cursor) > 256 {
		errs = append(errs, FieldError{Field: "cursor", Message: "too long"})
	}
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid query parameters", errs)
		return
	}
	agents, err := s.store.ListAgents(c.Request.Context(), store.AgentFilter{Status: status, Limit: limit + 1, After: cursor})
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
