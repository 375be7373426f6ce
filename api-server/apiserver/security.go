package apiserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/auth"
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
