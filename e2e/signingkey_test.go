package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/signing"
)

// The scheduler binary writes the signing key's public half to
// BACKEND_CERTIFICATE_PATH (0644); an agent pinning that file runs the
// platform's COMMANDs; a scheduler whose private key does not match the file
// refuses to start, saying which setting.
func TestSigningPublicKeyFile(t *testing.T) {
	c := newCluster(t)
	cert := filepath.Join(t.TempDir(), "backend.crt")
	c.Env = append(c.Env, "BACKEND_CERTIFICATE_PATH="+cert)
	sys := startSystem(t, c)

	priv, err := signing.LoadPrivateKey(c.getenv("BACKEND_PRIVATE_KEY_PATH"))
	require.NoError(t, err)
	st, err := os.Stat(cert)
	require.NoError(t, err, "the scheduler wrote the file")
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	pub, err := signing.LoadPublicKey(cert)
	require.NoError(t, err)
	require.True(t, pub.Equal(priv.Public()))

	t.Run("an agent pinning the file runs commands", func(t *testing.T) {
		c.start("agentsim-pinned", "agentsim", nil, "--gateway", sys.gateways[0], "--agents", "1", "--prefix", "pinned-",
			"--enrollment-secret", sys.enrollKey, "--signing-public-key", cert)
		agents := sys.waitOnline(t, 1)
		var created commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": "pinned"}, "agent_targets": []string{agents[0].ID},
		}, &created))
		done := sys.waitCommand(t, created.ID, 30*time.Second, 50*time.Millisecond)
		require.Equal(t, "succeeded", done.Status)
		require.Equal(t, "pinned", done.Executions[0].Output)
	})

	t.Run("a scheduler whose key the file does not hold refuses to start", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.key")
		_, err := signing.GenerateKeyFile(other)
		require.NoError(t, err)
		p := c.start("scheduler-other-key", "scheduler", []string{"BACKEND_PRIVATE_KEY_PATH=" + other}, "--port", strconv.Itoa(freePort(t)))
		select {
		case <-p.Done:
		case <-time.After(30 * time.Second):
			t.Fatal("the scheduler started with a key the public key file does not hold")
		}
		require.NotEqual(t, 0, p.Cmd.ProcessState.ExitCode())
		require.Contains(t, p.Tail(4000), "security.backend_certificate_path")
		require.Contains(t, p.Tail(4000), fmt.Sprint(signing.KeyID(pub)))
		after, err := signing.LoadPublicKey(cert)
		require.NoError(t, err)
		require.True(t, after.Equal(pub), "the file is left alone")
	})
}
