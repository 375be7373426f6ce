package service

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/viworks/backend-agent/pkg/atomicfile"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/config"
)

// NewJWT builds the token issuer/verifier of cfg.
func NewJWT(cfg config.Config) (*auth.JWT, error) {
	return auth.NewJWT(auth.Config{
		Secret: []byte(cfg.Security.JWTSecret), Issuer: cfg.Security.JWTIssuer, Audience: cfg.Security.JWTAudience,
		TTL: cfg.JWTExpiration(), MaxLifetime: cfg.MaxTokenLifetime(),
	})
}

// DevSecretFileEnv names the file of dev mode's generated JWT secret,
// overriding DevSecretFile's default.
const DevSecretFileEnv = "VIWORKS_DEV_SECRET_FILE" //nolint:gosec // G101: the name of a variable, not a secret

// DevSecretFile is where dev mode keeps the JWT secret it generates:
// $VIWORKS_DEV_SECRET_FILE, else viworks/dev-jwt.secret in the user's cache
// directory ($XDG_CACHE_HOME or ~/.cache).
func DevSecretFile() (string, error) {
	if p := os.Getenv(DevSecretFileEnv); p != "" {
		return p, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("dev mode: no directory for the generated JWT secret (%w); set %s or JWT_SECRET", err, DevSecretFileEnv)
	}
	return filepath.Join(dir, "viworks", "dev-jwt.secret"), nil
}

// DevJWTSecret replaces a placeholder (or empty) JWT secret in dev mode, so
// the well-known example secret never signs or verifies a token. With
// generate (the server starting) it writes a new random secret to
// DevSecretFile (0600); without (the token subcommand) it reads the one the
// server wrote. It returns cfg unchanged, and no path, outside dev mode or
// when a real secret is configured.
func DevJWTSecret(cfg config.Config, generate bool) (config.Config, string, error) {
	if !cfg.Server.DevMode || (cfg.Security.JWTSecret != "" && !config.IsPlaceholder(cfg.Security.JWTSecret)) {
		return cfg, "", nil
	}
	path, err := DevSecretFile()
	if err != nil {
		return cfg, "", err
	}
	if generate {
		raw := make([]byte, 32)
		_, _ = rand.Read(raw) // crypto/rand.Read never fails (Go 1.24+)
		secret := base64.RawURLEncoding.EncodeToString(raw)
		if err := writeSecret(path, secret); err != nil {
			return cfg, "", err
		}
		cfg.Security.JWTSecret = secret
		return cfg, path, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, "", fmt.Errorf("dev mode: %s does not exist; start the api-server in dev mode first (or set JWT_SECRET)", path)
	}
	if err != nil {
		return cfg, "", fmt.Errorf("reading %s: %w", path, err)
	}
	cfg.Security.JWTSecret = strings.TrimSpace(string(b))
	if len(cfg.Security.JWTSecret) < config.MinJWTSecretLen {
		return cfg, "", fmt.Errorf("dev mode: %s holds fewer than %d characters; restart the api-server in dev mode", path, config.MinJWTSecretLen)
	}
	return cfg, path, nil
}

// writeSecret writes secret to path readable by the owner only, atomically.
func writeSecret(path, secret string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the directory of %s: %w", path, err)
	}
	return atomicfile.Write(path, []byte(secret+"\n"))
}

// Token is the `token` subcommand shared by the binaries that mint API tokens:
// `NAME token --subject S --role R [--ttl 1h]` prints a JWT signed with the
// configured secret (in dev mode with a placeholder secret: the one the
// running server generated). Callers may add flags to fs that base reads. It
// returns the exit code.
func Token(name string, fs *flag.FlagSet, args []string, base func() (config.Config, error)) int {
	subject := fs.String("subject", "", "token subject (who the token is for)")
	role := fs.String("role", "", "viewer, operator or admin")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime, at most security.max_token_lifetime")
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
	case *ttl <= 0:
		return fail(2, fmt.Errorf("--ttl must be positive"))
	case *ttl > cfg.MaxTokenLifetime():
		return fail(2, fmt.Errorf("--ttl %s exceeds security.max_token_lifetime (%s)", *ttl, cfg.MaxTokenLifetime()))
	}
	if cfg, _, err = DevJWTSecret(cfg, false); err != nil {
		return fail(2, err)
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
