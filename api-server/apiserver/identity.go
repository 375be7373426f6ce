package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
)

// IdentityStore is the durable state of agent identities the admin manages.
type IdentityStore interface {
	RevokeAgent(ctx context.Context, agentID string, audit store.AuditEvent) (int, error)
	UnrevokeAgent(ctx context.Context, agentID string, audit store.AuditEvent) error
	DeleteAgent(ctx context.Context, agentID string, audit store.AuditEvent) (int, error)
	CreateReenrollSecret(ctx context.Context, agentID, secretHash, createdBy string, expiresAt time.Time, audit store.AuditEvent) error
}

// Lifetimes of re-enrollment secrets, in seconds.
const (
	defaultReenrollTTL = 24 * 3600
	maxReenrollTTL     = 7 * 24 * 3600
)

func (s *Server) identityRoutes(v1 *gin.RouterGroup) {
	v1.POST("/agents/:id/revoke", s.require(auth.RoleAdmin), s.revokeAgent)
	v1.POST("/agents/:id/unrevoke", s.require(auth.RoleAdmin), s.unrevokeAgent)
	v1.DELETE("/agents/:id", s.require(auth.RoleAdmin), s.deleteAgent)
	v1.POST("/agents/:id/reenroll-secret", s.require(auth.RoleAdmin), s.createReenrollSecret)
}

// AgentEndedView answers a revocation or a deletion.
type AgentEndedView struct {
	AgentID             string `json:"agent_id"`
	CancelledExecutions int    `json:"cancelled_executions"`
	EnrollmentBlocked   bool   `json:"enrollment_blocked"`
}

func (s *Server) revokeAgent(c *gin.Context) { s.endAgent(c, true) }

func (s *Server) deleteAgent(c *gin.Context) { s.endAgent(c, false) }

// endAgent revokes (revoke) or deletes an agent, then tells every gateway to
// drop its cached credential and close its session, and publishes the event.
func (s *Server) endAgent(c *gin.Context, revoke bool) {
	id, ok := idParam(c, resAgent)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	var n int
	var err error
	action, typ, reason := "agent.delete", events.AgentDeleted, "agent deleted"
	if revoke {
		action, typ, reason = "agent.revoke", events.AgentRevoked, store.ExecAgentRevoked
		n, err = s.store.RevokeAgent(ctx, id, auditEvent(c, action, nil))
	} else {
		n, err = s.store.DeleteAgent(ctx, id, auditEvent(c, action, nil))
	}
	if s.storeFailed(c, resAgent, action, err) {
		return
	}
	// The credential is dead in the database already; this closes the live
	// sessions and drops what gateways cached.
	s.agentChanged()
	bctx := context.WithoutCancel(ctx)
	s.send.AgentEnded(bctx, id, reason)
	s.events.Agent(bctx, typ, id, "", reason)
	c.JSON(http.StatusOK, AgentEndedView{AgentID: id, CancelledExecutions: n, EnrollmentBlocked: revoke})
}

func (s *Server) unrevokeAgent(c *gin.Context) {
	if id, ok := s.removeByID(c, resRevokedAgent, "agent.unrevoke", nil, s.store.UnrevokeAgent); ok {
		s.agentChanged()
		s.events.Agent(context.WithoutCancel(c.Request.Context()), events.AgentUnrevoked, id, "", "")
	}
}

// ReenrollSecretRequest is the optional body of POST /agents/{id}/reenroll-secret.
type ReenrollSecretRequest struct {
	ExpiresIn *int `json:"expires_in"` // seconds; default one day, at most seven
}

// ReenrollSecretView answers POST /agents/{id}/reenroll-secret; the secret is shown once.
type ReenrollSecretView struct {
	AgentID   string    `json:"agent_id"`
	Secret    string    `json:"secret"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) createReenrollSecret(c *gin.Context) {
	id, ok := idParam(c, resAgent)
	if !ok {
		return
	}
	var req ReenrollSecretRequest
	if c.Request.ContentLength != 0 && !readStrict(c, &req) {
		return
	}
	ttl := defaultReenrollTTL
	if req.ExpiresIn != nil {
		if *req.ExpiresIn < 60 || *req.ExpiresIn > maxReenrollTTL {
			writeProblem(c, http.StatusBadRequest, "invalid re-enrollment secret request",
				[]FieldError{{Field: "expires_in", Message: fmt.Sprintf("must be from 60 to %d seconds", maxReenrollTTL)}})
			return
		}
		ttl = *req.ExpiresIn
	}
	exp := time.Now().UTC().Add(time.Duration(ttl) * time.Second).Truncate(time.Second)
	secret, hash := newSecret(store.ReenrollSecretPrefix)
	err := s.store.CreateReenrollSecret(c.Request.Context(), id, hash, principal(c).Subject, exp,
		auditEvent(c, "agent.reenroll_secret", map[string]any{"expires_at": exp}))
	if s.storeFailed(c, resAgent, "creating re-enrollment secret", err) {
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, ReenrollSecretView{AgentID: id, Secret: secret, ExpiresAt: exp})
}
