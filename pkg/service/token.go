package service

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/config"
)

// NewJWT builds the token issuer/verifier of cfg.
func NewJWT(cfg config.Config) (*auth.JWT, error) {
	return auth.NewJWT(auth.Config{
		Secret: []byte(cfg.Security.JWTSecret), Issuer: cfg.Security.JWTIssuer, Audience: cfg.Security.JWTAudience,
		TTL: cfg.JWTExpiration(),
	})
}

// Token is the `token` subcommand shared by the binaries that mint API tokens:
// `NAME token --subject S --role R [--ttl 1h]` prints a JWT signed with the
// configured secret. Callers may add flags to fs that base reads. It returns
// the exit code.
func Token(name string, fs *flag.FlagSet, args []string, base func() (config.Config, error)) int {
	subject := fs.String("subject", "", "token subject (who the token is for)")
	role := fs.String("role", "", "viewer, operator or admin")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	fail := func(code int, err error) int {
		PrintErrors(os.Stderr, name, err)
		return code
	}
	cfg, err := LoadConfigWith(fs, args, base)
	if err != nil {
		return fail(2, err)
	}
	r, err := auth.ParseRole(*role)
	switch {
	case err != nil:
		return fail(2, fmt.Errorf("--role: %w", err))
	case *subject == "":
		return fail(2, fmt.Errorf("--subject is required"))
	case *ttl <= 0 || *ttl > 30*24*time.Hour:
		return fail(2, fmt.Errorf("--ttl must be between 1s and 720h"))
	}
	jwt, err := NewJWT(cfg)
	if err != nil {
		return fail(2, err)
	}
	tok, err := jwt.Issue(*subject, r, *ttl)
	if err != nil {
		return fail(1, err)
	}
	fmt.Println(tok)
	return 0
}
