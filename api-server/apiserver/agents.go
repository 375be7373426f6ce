package apiserver

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/agentspec"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
)

// AgentHealth is an agent's latest heartbeat.
type AgentHealth struct {
	Status  string `json:"status"`
	UptimeS int64  `json:"uptime_s"`
}

// AgentView is the API shape of an agent. Site, Labels and Capabilities are
// the trusted attributes that selectors and the list filters match
// (AttributesSource says who set site and labels); the Reported fields are
// what the agent claimed in its latest HELLO.
type AgentView struct {
	ID                   string            `json:"id"`
	Status               string            `json:"status"`
	Site                 string            `json:"site"`
	Version              string            `json:"version"`
	Capabilities         []string          `json:"capabilities"`
	Labels               map[string]string `json:"labels"`
	AttributesSource     string            `json:"attributes_source"`
	ReportedSite         string            `json:"reported_site"`
	ReportedLabels       map[string]string `json:"reported_labels"`
	ReportedCapabilities []string          `json:"reported_capabilities"`
	Hostname             string            `json:"hostname"`
	OS                   string            `json:"os"`
	Arch                 string            `json:"arch"`
	GatewayID            string            `json:"gateway_id"`
	ConnectedAt          *time.Time        `json:"connected_at"`
	LastSeenAt           *time.Time        `json:"last_seen_at"`
	Health               AgentHealth       `json:"health"`
}

func nonNilList(l store.StringList) []string {
	if l == nil {
		return []string{}
	}
	return l
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
		if agentspec.CheckID("", q) != nil {
			errs = append(errs, FieldError{Field: "q", Message: "must be an id prefix of " + agentspec.IDRule})
		}
		f.IDPrefix = q
	}
	if raw := c.Query("cursor"); raw != "" {
		after, ok := decodeAgentCursor(raw)
		if !ok {
			errs = append(errs, FieldError{Field: "cursor", Message: "is not a cursor returned by this list"})
		}
		f.After = after
	}
	return f, errs
}

// agentCursorTag marks the agent list's cursors, opaque to clients, so that
// a value this list did not hand out is refused instead of read as an id.
const agentCursorTag = "agent|"

func encodeAgentCursor(id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(agentCursorTag + id))
}

func decodeAgentCursor(raw string) (string, bool) {
	if len(raw) > 512 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return "", false
	}
	id, ok := strings.CutPrefix(string(b), agentCursorTag)
	if !ok || agentspec.CheckID("", id) != nil {
		return "", false
	}
	return id, true
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
	v.State = s.agentState(a, now)
	c.JSON(http.StatusOK, v)
}

// AgentPatchRequest is the body of PATCH /agents/{id}, a JSON merge patch of
// the agent's trusted attributes: site (null: ""), labels (a label set to
// null is removed, labels not named are kept; labels null removes all).
type AgentPatchRequest struct {
	Site   json.RawMessage `json:"site"`
	Labels json.RawMessage `json:"labels"`
}

// parseAgentPatch turns the request into a store patch, naming each problem.
func parseAgentPatch(req AgentPatchRequest) (store.AttributesPatch, []FieldError) {
	p := store.AttributesPatch{MaxLabels: agentspec.MaxLabels}
	var errs []FieldError
	if req.Site == nil && req.Labels == nil {
		errs = append(errs, FieldError{Field: "site", Message: "give site or labels to change"})
	}
	switch {
	case req.Site == nil:
	case string(req.Site) == "null":
		p.Site = new(string)
	default:
		var site string
		if json.Unmarshal(req.Site, &site) != nil {
			errs = append(errs, FieldError{Field: "site", Message: "must be a string or null"})
		} else if fe := validSite("site", site); fe != nil {
			errs = append(errs, *fe)
		} else {
			p.Site = &site
		}
	}
	switch {
	case req.Labels == nil:
	case string(req.Labels) == "null":
		p.ClearLabels = true
	default:
		if json.Unmarshal(req.Labels, &p.Labels) != nil {
			errs = append(errs, FieldError{Field: "labels", Message: "must be an object of strings or nulls, or null"})
			break
		}
		keys := make(map[string]string, len(p.Labels))
		for k, v := range p.Labels {
			keys[k] = ""
			if v != nil {
				keys[k] = *v
			}
		}
		if fe := validLabels("labels", keys); fe != nil {
			errs = append(errs, *fe)
		}
	}
	return p, errs
}

// patchAgent changes an agent's trusted site and labels (admin): they match
// selectors at once, the agent's HELLOs no longer change them (a new
// enrollment does), and the change is audited with its before and after.
func (s *Server) patchAgent(c *gin.Context) {
	id, ok := idParam(c, resAgent)
	if !ok {
		return
	}
	var req AgentPatchRequest
	if !readStrict(c, &req) {
		return
	}
	p, errs := parseAgentPatch(req)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid agent change", errs)
		return
	}
	p.Audit = auditEvent(c, "agent.update", nil)
	a, err := s.store.PatchAgentAttributes(c.Request.Context(), id, p)
	if s.storeFailed(c, resAgent, "changing agent attributes", err) {
		return
	}
	s.agentChanged()
	s.events.Agent(c.Request.Context(), events.AgentUpdated, a.ID, "", "")
	s.writeAgent(c, &a)
}
