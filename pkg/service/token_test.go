package service

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/config"
)

func TestTokenRefusesLifetimesBeyondTheMaximum(t *testing.T) {
	base := func() (config.Config, error) {
		c := config.Default()
		c.Security.JWTSecret = "0123456789abcdef0123456789abcdef0123"
		c.Security.AuditKey = "test-audit-key-0123456789abcdef0123456789"
		return c, nil
	}
	for _, tc := range []struct {
		ttl  string
		code int
	}{{"48h", 2}, {"24h1s", 2}, {"0s", 2}, {"24h", 0}} {
		t.Run(tc.ttl, func(t *testing.T) {
			code := Token("test token", flag.NewFlagSet("t", flag.ContinueOnError), []string{"--subject", "s", "--role", "viewer", "--ttl", tc.ttl}, base)
			require.Equal(t, tc.code, code)
		})
	}
}

func TestDevJWTSecretReplacesThePlaceholder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir", "dev-jwt.secret")
	t.Setenv(DevSecretFileEnv, path)
	cfg := config.Default() // the placeholder secret
	cfg.Server.DevMode = true

	// The token subcommand before any server ran: a clear error, no token.
	_, _, err := DevJWTSecret(cfg, false)
	require.ErrorContains(t, err, "start the api-server in dev mode first")

	served, file, err := DevJWTSecret(cfg, true)
	require.NoError(t, err)
	require.Equal(t, path, file)
	require.NotEqual(t, cfg.Security.JWTSecret, served.Security.JWTSecret)
	require.GreaterOrEqual(t, len(served.Security.JWTSecret), config.MinJWTSecretLen)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	minted, _, err := DevJWTSecret(cfg, false)
	require.NoError(t, err)
	require.Equal(t, served.Security.JWTSecret, minted.Security.JWTSecret, "the token subcommand reads the server's secret")

	// A token forged with the placeholder does not verify.
	server, err := NewJWT(served)
	require.NoError(t, err)
	placeholder, err := NewJWT(cfg)
	require.NoError(t, err)
	forged, err := placeholder.Issue("mallory", auth.RoleAdmin, time.Hour)
	require.NoError(t, err)
	_, err = server.Verify(forged)
	require.ErrorIs(t, err, auth.ErrInvalidToken)

	// A real secret, or no dev mode, is left alone.
	real := cfg
	real.Security.JWTSecret = "a-real-secret-of-enough-length-0123456789"
	got, file, err := DevJWTSecret(real, true)
	require.NoError(t, err)
	require.Empty(t, file)
	require.Equal(t, real.Security.JWTSecret, got.Security.JWTSecret)
	prod := cfg
	prod.Server.DevMode = false
	got, _, err = DevJWTSecret(prod, true)
	require.NoError(t, err)
	require.Equal(t, prod.Security.JWTSecret, got.Security.JWTSecret)
}
