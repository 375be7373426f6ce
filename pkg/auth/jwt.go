// Package auth issues and verifies the API's JWTs (HS256 pinned; exp, iss and
// aud required) and defines the roles of DESIGN §4.
package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
}

// Config configures token issuing and verification.
type Config struct {
	Secret   []byte
	Issuer   string
	Audience string
	TTL      time.Duration // default lifetime of issued tokens
	Leeway   time.Duration // clock skew tolerated on exp/nbf/iat; default 30s
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
	return errors.Join(errs...)
}

// JWT issues and verifies tokens.
type JWT struct {
	cfg    Config
	parser *jwt.Parser
}

type claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// NewJWT builds an issuer/verifier.
func NewJWT(cfg Config) (*JWT, error) {
	if cfg.TTL <= 0 {
		cfg.TTL = time.Hour
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
	return &JWT{cfg: cfg, parser: p}, nil
}

// Issue signs a token for subject with role, valid for ttl (0: the configured TTL).
func (j *JWT) Issue(subject string, role Role, ttl time.Duration) (string, error) {
	if subject == "" {
		return "", errors.New("issuing token: subject is required")
	}
	if !role.Valid() {
		return "", fmt.Errorf("issuing token: unknown role %q", role)
	}
	if ttl <= 0 {
		ttl = j.cfg.TTL
	}
	now := time.Now()
	c := claims{
		Role: string(role),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   subject,
			Issuer:    j.cfg.Issuer,
			Audience:  jwt.ClaimStrings{j.cfg.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(j.cfg.Secret)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return s, nil
}

// ErrInvalidToken wraps every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// Verify checks signature, algorithm, typ, exp, iss and aud and returns the principal.
func (j *JWT) Verify(token string) (Principal, error) {
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
	return Principal{Subject: c.Subject, Role: role}, nil
}
