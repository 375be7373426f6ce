package apiserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

// SecurityStore is the durable state of the audit trail, API keys,
// enrollment secrets and idempotency keys.
type SecurityStore interface {
	RecordAudit(ctx context.Context, e store.AuditEvent) error
	RecordAudits(ctx context.Context, es []store.AuditEvent) error
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEvent, string, error)
	VerifyAudit(ctx context.Context, kept *store.AuditHead) (store.AuditVerification, error)

	CreateAPIKey(ctx context.Context, nk store.NewAPIKey) (store.APIKey, error)
	ListAPIKeys(ctx context.Context, p store.Page) ([]store.APIKey, string, error)
	RevokeAPIKey(ctx context.Context, id string, audit store.AuditEvent) error
	UseAPIKey(ctx context.Context, keyHash string, now time.Time) (store.APIKey, error)
	APIKeyRevoked(ctx context.Context, id string) (bool, error)

	CreateEnrollmentSecret(ctx context.Context, ns store.NewEnrollmentSecret) (store.EnrollmentSecret, error)
	ListEnrollmentSecrets(ctx context.Context, p store.Page) ([]store.EnrollmentSecret, string, error)
	RevokeEnrollmentSecret(ctx context.Context, id string, audit store.AuditEvent) error

	BeginIdempotent(ctx context.Context, principal, key, requestHash string, ttl time.Duration) (store.IdempotencyKey, bool, error)
	CompleteIdempotent(ctx context.Context, principal, key string, status int, location string, response []byte) error
	AbandonIdempotent(ctx context.Context, principal, key string) error
}

// TokenIssuer signs tokens; the Verifier given to New issues the tokens of
// POST /auth/token when it implements it (auth.JWT does).
type TokenIssuer interface {
	IssueSpec(sp auth.Spec) (auth.Issued, error)
	MaxLifetime() time.Duration
}

// Prefixes of generated secrets, so leaked ones are recognisable (and
// scannable) and cannot be mistaken for each other.
const (
	APIKeyPrefix           = "vwk_"
	EnrollmentSecretPrefix = "vwe_"
	secretBytes            = 32 // 256 bits
	shownPrefixLen         = 12 // characters of a key kept to recognise it
	maxSecretInputLen      = 256
	maxExpiresIn           = 2 * 365 * 24 * 3600 // seconds
	maxMaxUses             = 1_000_000
)

func (s *Server) securityRoutes(v1 *gin.RouterGroup) {
	v1.GET("/audit", s.require(auth.RoleAdmin), s.listAudit)
	v1.GET("/audit/verify", s.require(auth.RoleAdmin), s.verifyAudit)
	v1.POST("/api-keys", s.require(auth.RoleAdmin), s.createAPIKey)
	v1.GET("/api-keys", s.require(auth.RoleAdmin), s.listAPIKeys)
	v1.DELETE("/api-keys/:id", s.require(auth.RoleAdmin), s.revokeAPIKey)
	v1.POST("/auth/token", s.exchangeToken)
	v1.POST("/enrollment-secrets", s.require(auth.RoleAdmin), s.createEnrollmentSecret)
	v1.GET("/enrollment-secrets", s.require(auth.RoleAdmin), s.listEnrollmentSecrets)
	v1.DELETE("/enrollment-secrets/:id", s.require(auth.RoleAdmin), s.revokeEnrollmentSecret)
}

// NewEnrollmentSecret returns a new enrollment secret and its stored hash,
// for a secret issued by the product itself (the all-in-one's demo agents).
func NewEnrollmentSecret() (secret, hash string) { return newSecret(EnrollmentSecretPrefix) }

// newSecret returns prefix + 256 random bits (base64url) and its SHA-256 hash.
func newSecret(prefix string) (secret, hash string) {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	secret = prefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, HashSecret(secret)
}

// HashSecret is how API keys and enrollment secrets are stored: SHA-256, hex.
// They carry 256 random bits, so a fast hash is enough.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// audit records a security event outside any other write; failures are logged.
func (s *Server) audit(c *gin.Context, actor, action, target string, details map[string]any) {
	raw := auditDetails(details)
	e := store.AuditEvent{Actor: actor, Action: action, Target: target, RequestID: c.GetString(ctxRequestID), ClientIP: c.ClientIP(), Details: raw}
	if err := s.store.RecordAudit(context.WithoutCancel(c.Request.Context()), e); err != nil {
		s.log.WithError(err).WithFields(map[string]any{"action": action, "request_id": e.RequestID}).Warn("writing audit event failed")
	}
}

// auditEvent is the audit event of the current request by its principal.
func auditEvent(c *gin.Context, action string, details map[string]any) store.AuditEvent {
	return store.AuditEvent{Actor: principal(c).Subject, Action: action, RequestID: c.GetString(ctxRequestID), ClientIP: c.ClientIP(), Details: auditDetails(details)}
}

// auditDetails encodes an event's details: always a JSON object, {} when
// there are none (never null, which the API document does not allow).
func auditDetails(details map[string]any) []byte {
	if details == nil {
		details = map[string]any{}
	}
	raw, _ := json.Marshal(details)
	return raw
}

// validSite checks an agent site by the agent protocol's HELLO rules.
func validSite(field, site string) *FieldError {
	if protocol.ValidateHello(&protocol.Hello{AgentID: "x", Site: site}) != nil {
		return &FieldError{Field: field, Message: fmt.Sprintf("at most %d bytes", protocol.MaxShortFieldLen)}
	}
	return nil
}

// validLabels checks agent labels by the agent protocol's HELLO rules.
func validLabels(field string, labels map[string]string) *FieldError {
	if protocol.ValidateHello(&protocol.Hello{AgentID: "x", Labels: labels}) != nil {
		return &FieldError{Field: field, Message: fmt.Sprintf("at most %d labels; keys 1-%d bytes, values at most %d", protocol.MaxLabels, protocol.MaxShortFieldLen, protocol.MaxShortFieldLen)}
	}
	return nil
}

// validName checks a required display name.
func validName(field, v string, maxLen int) *FieldError {
	if strings.TrimSpace(v) == "" || len(v) > maxLen || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return &FieldError{Field: field, Message: fmt.Sprintf("is required: 1-%d bytes of text without control characters", maxLen)}
	}
	return nil
}

// expiry turns expires_in (seconds) / expires_at into an expiry time.
func expiry(expiresIn *int, expiresAt *time.Time, now time.Time, errs *[]FieldError) *time.Time {
	switch {
	case expiresIn != nil && expiresAt != nil:
		*errs = append(*errs, FieldError{Field: "expires_at", Message: "give expires_in or expires_at, not both"})
	case expiresIn != nil:
		if *expiresIn < 60 || *expiresIn > maxExpiresIn {
			*errs = append(*errs, FieldError{Field: "expires_in", Message: fmt.Sprintf("must be from 60 to %d seconds", maxExpiresIn)})
			return nil
		}
		t := now.Add(time.Duration(*expiresIn) * time.Second)
		return &t
	case expiresAt != nil:
		if !expiresAt.After(now) || expiresAt.After(now.Add(maxExpiresIn*time.Second)) {
			*errs = append(*errs, FieldError{Field: "expires_at", Message: "must be in the future, at most two years ahead"})
			return nil
		}
		return expiresAt
	}
	return nil
}

// ---- audit ----

// AuditEventView is the API shape of an audit event.
type AuditEventView struct {
	ID        int64           `json:"id"`
	At        time.Time       `json:"at"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	Target    string          `json:"target"`
	RequestID string          `json:"request_id"`
	ClientIP  string          `json:"client_ip"`
	Details   json.RawMessage `json:"details"`
	KeyID     string          `json:"key_id"`
	PrevHash  string          `json:"prev_hash"`
	Hash      string          `json:"hash"`
}

func (s *Server) listAudit(c *gin.Context) {
	listPage(s, c, resAuditEvent, parseAuditFilter, s.store.ListAudit, auditEventView)
}

// parseAuditFilter reads the filters of GET /audit: actor, action, target,
// from and to.
func parseAuditFilter(c *gin.Context, page store.Page, errs *[]FieldError) store.AuditFilter {
	f := store.AuditFilter{Actor: c.Query("actor"), Action: c.Query("action"), Target: c.Query("target"), Page: page}
	for _, q := range []struct {
		name string
		dst  **time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		v := c.Query(q.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil || len(v) > 64 {
			*errs = append(*errs, FieldError{Field: q.name, Message: "must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z"})
			continue
		}
		*q.dst = &t
	}
	return f
}

func auditEventView(e store.AuditEvent) AuditEventView {
	details := json.RawMessage(e.Details)
	if len(details) == 0 || string(details) == "null" { // recorded before details were always an object
		details = json.RawMessage(`{}`)
	}
	return AuditEventView{ID: e.ID, At: e.At, Actor: e.Actor, Action: e.Action, Target: e.Target,
		RequestID: e.RequestID, ClientIP: e.ClientIP, Details: details, KeyID: e.KeyID, PrevHash: e.PrevHash, Hash: e.Hash}
}

// AuditHeads is where the audit chain's head is kept outside the database
// (audithead.Keeper).
type AuditHeads interface {
	Load(ctx context.Context) (*store.AuditHead, error)
}

func (s *Server) verifyAudit(c *gin.Context) {
	var kept *store.AuditHead
	if s.cfg.AuditHeads != nil {
		var err error
		if kept, err = s.cfg.AuditHeads.Load(c.Request.Context()); err != nil {
			s.internalError(c, "loading the kept audit head failed", err)
			return
		}
	}
	v, err := s.store.VerifyAudit(c.Request.Context(), kept)
	if err != nil {
		s.internalError(c, "verifying audit trail failed", err)
		return
	}
	c.JSON(http.StatusOK, v)
}

// ---- API keys ----

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

// ---- enrollment secrets ----

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
		if err := protocol.ValidateHello(&protocol.Hello{AgentID: "x", Capabilities: *req.AllowedCapabilities}); err != nil {
			errs = append(errs, FieldError{Field: "allowed_capabilities", Message: fmt.Sprintf("at most %d entries of 1-%d bytes", protocol.MaxCapabilities, protocol.MaxShortFieldLen)})
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
