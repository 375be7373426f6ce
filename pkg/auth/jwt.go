// Package auth issues and verifies the API's JWTs (HS256 pinned; exp, iat,
// iss and aud required; a lifetime bounded by Config.MaxLifetime; a jti in
// every token) and defines the API's roles.
package auth

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Role is the access level carried in a token's "role" claim.
type Role string

// Roles, each including the rights of the ones before it.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.rank() > 0 }

// Allows reports whether r grants at least the rights of need.
func (r Role) Allows(need Role) bool { return r.Valid() && r.rank() >= need.rank() }

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("unknown role %q (want viewer, operator or admin)", s)
	}
	return r, nil
}

// Principal is an authenticated caller.
type Principal struct {
	Subject string
	Role    Role
	// TokenID is the token's "jti".
	TokenID string
	// APIKeyID is the API key the token was exchanged for ("api_key" claim);
	// empty for tokens minted otherwise.
	APIKeyID string
	// ExpiresAt is the token's "exp".
	ExpiresAt time.Time
}

// DefaultMaxLifetime bounds exp − iat of the tokens issued and accepted when
// Config.MaxLifetime is zero.
const DefaultMaxLifetime = 24 * time.Hour

// Config configures token issuing and verification.
type Config struct {
	Secret   []byte
	Issuer   string
	Audience string
	TTL      time.Duration // default lifetime of issued tokens
	Leeway   time.Duration // clock skew tolerated on exp/nbf/iat; default 30s
	// MaxLifetime is the longest exp − iat issued or accepted; a token beyond
	// it, or without iat, is refused. Default DefaultMaxLifetime.
	MaxLifetime time.Duration
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if len(c.Secret) == 0 {
		errs = append(errs, errors.New("auth: secret is required"))
	}
	if c.Issuer == "" {
		errs = append(errs, errors.New("auth: issuer is required"))
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("auth: audience is required"))
	}
	if c.TTL > c.MaxLifetime && c.MaxLifetime > 0 {
		errs = append(errs, fmt.Errorf("auth: the default token lifetime %s exceeds the maximum lifetime %s", c.TTL, c.MaxLifetime))
	}
	return errors.Join(errs...)
}

// JWT issues and verifies tokens.
type JWT struct {
	cfg    Config
	parser *jwt.Parser

	// verified remembers tokens that passed Verify, so a client sending the
	// same token again costs a map lookup instead of a parse and an HMAC; a hit
	// still checks the expiry. At most verifiedMax entries; when full, it is
	// emptied.
	mu       sync.Mutex
	verified map[string]Principal
}

// verifiedMax bounds JWT.verified (tokens of a few hundred bytes each).
const verifiedMax = 4096

type claims struct {
	Role     string `json:"role"`
	APIKeyID string `json:"api_key,omitempty"`
	jwt.RegisteredClaims
}

// NewJWT builds an issuer/verifier.
func NewJWT(cfg Config) (*JWT, error) {
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.TTL <= 0 {
		cfg.TTL = min(time.Hour, cfg.MaxLifetime)
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
	)
	return &JWT{cfg: cfg, parser: p, verified: make(map[string]Principal)}, nil
}

// MaxLifetime is the longest lifetime the JWT issues or accepts.
func (j *JWT) MaxLifetime() time.Duration { return j.cfg.MaxLifetime }

// Spec describes a token to issue.
type Spec struct {
	Subject  string
	Role     Role
	TTL      time.Duration // 0: the configured TTL; at most MaxLifetime
	APIKeyID string        // the API key the token is exchanged for, if any
}

// Issued is a signed token and the claims a caller records.
type Issued struct {
	Token     string
	ID        string // jti
	ExpiresAt time.Time
}

// ErrLifetime is returned for a token lifetime beyond MaxLifetime.
var ErrLifetime = errors.New("token lifetime exceeds the maximum")

// IssueSpec signs the token sp describes, with a random jti.
func (j *JWT) IssueSpec(sp Spec) (Issued, error) {
	if sp.Subject == "" {
		return Issued{}, errors.New("issuing token: subject is required")
	}
	if !sp.Role.Valid() {
		return Issued{}, fmt.Errorf("issuing token: unknown role %q", sp.Role)
	}
	ttl := sp.TTL
	if ttl <= 0 {
		ttl = j.cfg.TTL
	}
	if ttl > j.cfg.MaxLifetime {
		return Issued{}, fmt.Errorf("issuing token: %w (%s > %s)", ErrLifetime, ttl, j.cfg.MaxLifetime)
	}
	now := time.Now()
	out := Issued{ID: uuid.NewString(), ExpiresAt: now.Add(ttl)}
	c := claims{
		Role:     string(sp.Role),
		APIKeyID: sp.APIKeyID,
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        out.ID,
			Subject:   sp.Subject,
			Issuer:    j.cfg.Issuer,
			Audience:  jwt.ClaimStrings{j.cfg.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(out.ExpiresAt),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(j.cfg.Secret)
	if err != nil {
		return Issued{}, fmt.Errorf("signing token: %w", err)
	}
	out.Token = s
	return out, nil
}

// Issue signs a token for subject with role, valid for ttl (0: the configured TTL).
func (j *JWT) Issue(subject string, role Role, ttl time.Duration) (string, error) {
	t, err := j.IssueSpec(Spec{Subject: subject, Role: role, TTL: ttl})
	return t.Token, err
}

// ErrInvalidToken wraps every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// Verify checks signature, algorithm, typ, exp, iat, iss, aud and the
// lifetime (exp − iat at most MaxLifetime) and returns the principal.
func (j *JWT) Verify(token string) (Principal, error) {
	j.mu.Lock()
	p, ok := j.verified[token]
	j.mu.Unlock()
	if ok {
		// Its signature, claims and lifetime passed before and cannot have
		// changed; only time can have: the expiry (with the parser's leeway).
		if time.Now().Before(p.ExpiresAt.Add(j.cfg.Leeway)) {
			return p, nil
		}
		j.mu.Lock()
		delete(j.verified, token)
		j.mu.Unlock()
	}
	p, err := j.verify(token)
	if err != nil {
		return Principal{}, err
	}
	j.mu.Lock()
	if len(j.verified) >= verifiedMax {
		clear(j.verified)
	}
	j.verified[token] = p
	j.mu.Unlock()
	return p, nil
}

// verify is Verify without the cache.
func (j *JWT) verify(token string) (Principal, error) {
	var c claims
	t, err := j.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != "JWT" {
			return nil, fmt.Errorf("typ header must be JWT, got %v", t.Header["typ"])
		}
		return j.cfg.Secret, nil
	})
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if !t.Valid {
		return Principal{}, ErrInvalidToken
	}
	role := Role(c.Role)
	if !role.Valid() {
		return Principal{}, fmt.Errorf("%w: unknown role %q", ErrInvalidToken, c.Role)
	}
	if c.Subject == "" {
		return Principal{}, fmt.Errorf("%w: missing subject", ErrInvalidToken)
	}
	if c.IssuedAt == nil {
		return Principal{}, fmt.Errorf("%w: missing iat", ErrInvalidToken)
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt.Time); life > j.cfg.MaxLifetime {
		return Principal{}, fmt.Errorf("%w: lifetime %s exceeds %s", ErrInvalidToken, life, j.cfg.MaxLifetime)
	}
	return Principal{Subject: c.Subject, Role: role, TokenID: c.ID, APIKeyID: c.APIKeyID, ExpiresAt: c.ExpiresAt.Time}, nil
}
