package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
)

// TestDevModeRefusesThePlaceholderSecret: an api-server in dev mode with the
// well-known placeholder JWT secret signs with a random one instead (an admin
// token forged with the placeholder answers 401), listens on loopback only,
// and its `token` subcommand mints with the generated secret.
func TestDevModeRefusesThePlaceholderSecret(t *testing.T) {
	c := newCluster(t)
	secretFile := filepath.Join(t.TempDir(), "dev-jwt.secret")
	c.Env = append(c.Env, "VIWORKS_DEV_MODE=true", "JWT_SECRET=change-me-in-production", "VIWORKS_DEV_SECRET_FILE="+secretFile)
	_, err := c.run("scheduler", "migrate")
	require.NoError(t, err)
	port := freePort(t)
	p := c.start("api-server", "api-server", nil, "--port", strconv.Itoa(port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitReady(t, base+"/readyz", p)

	require.Contains(t, p.Tail(8000), `addr="127.0.0.1:`+strconv.Itoa(port)+`"`, "dev mode binds loopback")
	fi, err := os.Stat(secretFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	placeholder, err := auth.NewJWT(auth.Config{Secret: []byte("change-me-in-production"), Issuer: "viworks", Audience: "viworks-api"})
	require.NoError(t, err)
	forged, err := placeholder.Issue("mallory", auth.RoleAdmin, time.Hour)
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, api{base: base, token: forged}.do(t, http.MethodGet, "/api/v1/api-keys", nil, nil))

	tok, err := c.run("api-server", "token", "--subject", "dev", "--role", "admin")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, api{base: base, token: strings.TrimSpace(tok)}.do(t, http.MethodGet, "/api/v1/api-keys", nil, nil))

	// Tokens of any lifetime are not minted.
	out, err := c.run("api-server", "token", "--subject", "dev", "--role", "admin", "--ttl", "48h")
	require.Error(t, err)
	require.Empty(t, out)
	require.Contains(t, err.Error(), "--ttl 48h0m0s exceeds security.max_token_lifetime (24h0m0s)")
}
