package apiserver

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/agentspec"
	"github.com/viworks/backend-agent/pkg/store"
)

// EnrollmentSecretRequest is the body of POST /api/v1/enrollment-secrets.
type EnrollmentSecretRequest struct {
	Name   string            `json:"name"`
	Site   string            `json:"site"`
	Labels map[string]string `json:"labels"`
	// AllowedCapabilities restricts the capabilities its agents are
	// targeted for; absent or null: any they announce.
	AllowedCapabilities *[]string  `json:"allowed_capabilities"`
	MaxUses             *int       `json:"max_uses"`
	ExpiresIn           *int       `json:"expires_in"` // seconds
	ExpiresAt           *time.Time `json:"expires_at"`
	// AgentIDPattern is a Go regular expression the whole agent id must match.
	AgentIDPattern string `json:"agent_id_pattern"`
	MaxAgents      *int   `json:"max_agents"`
}

// EnrollmentSecretView is the API shape of an enrollment secret; Secret is
// set only in the answer to its creation.
type EnrollmentSecretView struct {
	ID     string            `json:"id"`
	Name   string            `json:"name"`
	Site   string            `json:"site"`
	Labels map[string]string `json:"labels"`
	// AllowedCapabilities is null when any capability is allowed.
	AllowedCapabilities []string `json:"allowed_capabilities"`
	MaxUses             *int     `json:"max_uses"`
	Uses                int      `json:"uses"`
	// AgentIDPattern, MaxAgents: which ids it may create, and how many;
	// Agents is how many it created.
	AgentIDPattern string     `json:"agent_id_pattern"`
	MaxAgents      *int       `json:"max_agents"`
	Agents         int        `json:"agents"`
	CreatedBy      string     `json:"created_by"`
	CreatedAt      time.Time  `json:"created_at"`
	ExpiresAt      *time.Time `json:"expires_at"`
	RevokedAt      *time.Time `json:"revoked_at"`
	Secret         string     `json:"secret,omitempty"`
}

func enrollmentSecretView(e store.EnrollmentSecret) EnrollmentSecretView {
	labels := map[string]string(e.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	var allowed []string
	if e.AllowedCapabilities != nil {
		allowed = nonNilList(*e.AllowedCapabilities)
	}
	return EnrollmentSecretView{ID: e.ID, Name: e.Name, Site: e.Site, Labels: labels, AllowedCapabilities: allowed, MaxUses: e.MaxUses, Uses: e.Uses,
		AgentIDPattern: e.AgentIDPattern, MaxAgents: e.MaxAgents, Agents: e.Agents,
		CreatedBy: e.CreatedBy, CreatedAt: e.CreatedAt, ExpiresAt: e.ExpiresAt, RevokedAt: e.RevokedAt}
}

func (s *Server) createEnrollmentSecret(c *gin.Context) {
	var req EnrollmentSecretRequest
	if !readStrict(c, &req) {
		return
	}
	var errs []FieldError
	if fe := validName("name", req.Name, store.MaxEnrollmentNameLen); fe != nil {
		errs = append(errs, *fe)
	}
	if fe := validSite("site", req.Site); fe != nil {
		errs = append(errs, *fe)
	}
	if fe := validLabels("labels", req.Labels); fe != nil {
		errs = append(errs, *fe)
	}
	if req.AllowedCapabilities != nil {
		if err := agentspec.CheckCapabilities("allowed_capabilities", *req.AllowedCapabilities); err != nil {
			errs = append(errs, FieldError{Field: "allowed_capabilities", Message: fmt.Sprintf("at most %d entries of 1-%d bytes", agentspec.MaxCapabilities, agentspec.MaxShortFieldLen)})
		}
	}
	if req.MaxUses != nil && (*req.MaxUses < 1 || *req.MaxUses > maxMaxUses) {
		errs = append(errs, FieldError{Field: "max_uses", Message: fmt.Sprintf("must be from 1 to %d", maxMaxUses)})
	}
	if req.MaxAgents != nil && (*req.MaxAgents < 1 || *req.MaxAgents > maxMaxUses) {
		errs = append(errs, FieldError{Field: "max_agents", Message: fmt.Sprintf("must be from 1 to %d", maxMaxUses)})
	}
	if _, err := store.CompileAgentIDPattern(req.AgentIDPattern); err != nil {
		errs = append(errs, FieldError{Field: "agent_id_pattern", Message: fmt.Sprintf("must be a Go regular expression (RE2) of at most %d bytes, matched against the whole id", store.MaxAgentIDPatternLen)})
	}
	exp := expiry(req.ExpiresIn, req.ExpiresAt, time.Now(), &errs)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid enrollment secret request", errs)
		return
	}
	var allowed []string
	if req.AllowedCapabilities != nil {
		allowed = append([]string{}, *req.AllowedCapabilities...) // [] (none allowed) stays apart from nil (any)
	}
	secret, hash := newSecret(EnrollmentSecretPrefix)
	e, err := s.store.CreateEnrollmentSecret(c.Request.Context(), store.NewEnrollmentSecret{
		Name: req.Name, SecretHash: hash, Site: req.Site, Labels: req.Labels, AllowedCapabilities: allowed, MaxUses: req.MaxUses, CreatedBy: principal(c).Subject, ExpiresAt: exp,
		AgentIDPattern: req.AgentIDPattern, MaxAgents: req.MaxAgents,
		Audit: auditEvent(c, "enrollment_secret.create", map[string]any{"name": req.Name, "site": req.Site, "labels": req.Labels, "allowed_capabilities": allowed, "max_uses": req.MaxUses, "expires_at": exp,
			"agent_id_pattern": req.AgentIDPattern, "max_agents": req.MaxAgents}),
	})
	if s.storeFailed(c, resEnrollmentSecret, "creating enrollment secret", err) {
		return
	}
	v := enrollmentSecretView(e)
	v.Secret = secret // shown this once
	c.Header("Location", "/api/v1/enrollment-secrets/"+e.ID)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, v)
}

func (s *Server) listEnrollmentSecrets(c *gin.Context) {
	listPage(s, c, resEnrollmentSecret, pageOnly, s.store.ListEnrollmentSecrets, enrollmentSecretView)
}

func (s *Server) revokeEnrollmentSecret(c *gin.Context) {
	s.removeByID(c, resEnrollmentSecret, "enrollment_secret.revoke", nil, s.store.RevokeEnrollmentSecret)
}
