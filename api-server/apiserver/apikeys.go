package apiserver

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/store"
)

// APIKeyRequest is the body of POST /api/v1/api-keys.
type APIKeyRequest struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	ExpiresIn *int       `json:"expires_in"` // seconds
	ExpiresAt *time.Time `json:"expires_at"`
}

// APIKeyView is the API shape of an API key; Key is set only in the answer to
// its creation.
type APIKeyView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Prefix     string     `json:"prefix"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Key        string     `json:"key,omitempty"`
}

func apiKeyView(k store.APIKey) APIKeyView {
	return APIKeyView{ID: k.ID, Name: k.Name, Role: k.Role, Prefix: k.Prefix, CreatedBy: k.CreatedBy, CreatedAt: k.CreatedAt,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, LastUsedAt: k.LastUsedAt}
}

func (s *Server) createAPIKey(c *gin.Context) {
	var req APIKeyRequest
	if !readStrict(c, &req) {
		return
	}
	var errs []FieldError
	if fe := validName("name", req.Name, store.MaxAPIKeyNameLen); fe != nil {
		errs = append(errs, *fe)
	}
	role, err := auth.ParseRole(req.Role)
	if err != nil {
		errs = append(errs, FieldError{Field: "role", Message: "must be viewer, operator or admin"})
	}
	exp := expiry(req.ExpiresIn, req.ExpiresAt, time.Now(), &errs)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid API key request", errs)
		return
	}
	secret, hash := newSecret(APIKeyPrefix)
	k, err := s.store.CreateAPIKey(c.Request.Context(), store.NewAPIKey{
		Name: req.Name, Role: string(role), KeyHash: hash, Prefix: secret[:shownPrefixLen], CreatedBy: principal(c).Subject, ExpiresAt: exp,
		Audit: auditEvent(c, "api_key.create", map[string]any{"name": req.Name, "role": role, "expires_at": exp}),
	})
	if s.storeFailed(c, resAPIKey, "creating API key", err) {
		return
	}
	v := apiKeyView(k)
	v.Key = secret // shown this once
	c.Header("Location", "/api/v1/api-keys/"+k.ID)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, v)
}

func (s *Server) listAPIKeys(c *gin.Context) {
	listPage(s, c, resAPIKey, pageOnly, s.store.ListAPIKeys, apiKeyView)
}

func (s *Server) revokeAPIKey(c *gin.Context) {
	s.removeByID(c, resAPIKey, "api_key.revoke", map[string]any{"tokens_revoked": true},
		func(ctx context.Context, id string, audit store.AuditEvent) error {
			err := s.store.RevokeAPIKey(ctx, id, audit)
			s.revocations.forget(id)
			return err
		})
}

// TokenRequest is the body of POST /api/v1/auth/token (or send the key as
// Authorization: Bearer <key> and no body).
type TokenRequest struct {
	APIKey string `json:"api_key"`
}

// TokenResponse is the answer of POST /api/v1/auth/token.
type TokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	TokenType string    `json:"token_type"`
}

func (s *Server) exchangeToken(c *gin.Context) {
	issuer, ok := s.verifier.(TokenIssuer)
	if !ok {
		writeProblem(c, http.StatusNotImplemented, "this server does not issue tokens", nil)
		return
	}
	key := ""
	if h, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer "); ok {
		key = strings.TrimSpace(h)
	}
	if key == "" {
		var req TokenRequest
		if !readStrict(c, &req) {
			return
		}
		key = req.APIKey
	}
	deny := func(reason string) {
		s.audit(c, "anonymous", "auth.token.denied", "", map[string]any{"reason": reason})
		c.Header("WWW-Authenticate", `Bearer realm="viworks", error="invalid_token"`)
		writeProblem(c, http.StatusUnauthorized, "the API key is unknown, revoked or expired", nil)
	}
	if key == "" {
		writeProblem(c, http.StatusBadRequest, "an API key is required", []FieldError{{Field: "api_key", Message: "is required (or send it as Authorization: Bearer)"}})
		return
	}
	if len(key) > maxSecretInputLen || !strings.HasPrefix(key, APIKeyPrefix) {
		deny("malformed key")
		return
	}
	now := time.Now()
	k, err := s.store.UseAPIKey(c.Request.Context(), HashSecret(key), now)
	if errors.Is(err, store.ErrUnknownAPIKey) {
		deny("unknown, revoked or expired key")
		return
	}
	if err != nil {
		s.internalError(c, "looking up API key failed", err)
		return
	}
	// Never beyond the issuer's maximum lifetime, nor beyond the key's expiry.
	ttl := min(s.cfg.TokenTTL, issuer.MaxLifetime())
	if k.ExpiresAt != nil && k.ExpiresAt.Sub(now) < ttl {
		ttl = k.ExpiresAt.Sub(now)
	}
	subject := "apikey:" + k.ID
	tok, err := issuer.IssueSpec(auth.Spec{Subject: subject, Role: auth.Role(k.Role), TTL: ttl, APIKeyID: k.ID})
	if err != nil {
		s.internalError(c, "issuing token failed", err)
		return
	}
	s.audit(c, subject, "auth.token", k.ID, map[string]any{"role": k.Role, "ttl_seconds": int(ttl.Seconds()), "jti": tok.ID})
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, TokenResponse{Token: tok.Token, ExpiresAt: tok.ExpiresAt.UTC().Truncate(time.Second), TokenType: "Bearer"})
}
