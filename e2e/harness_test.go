package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/e2e/cluster"
	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/pkg/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the product's binaries once per test run, from this checkout.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() { binDir, buildErr = cluster.Build("..") })
	require.NoError(t, buildErr)
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := cluster.FreePort()
	require.NoError(t, err)
	return port
}

// testCluster is a cluster.Cluster bound to a test: failures to start fail the
// test, and at cleanup every process is stopped and, if the test failed, the
// tail of each log is printed.
type testCluster struct {
	*cluster.Cluster
	t *testing.T
}

type proc = cluster.Proc

func newTestCluster(t *testing.T, env []string) *testCluster {
	c := &testCluster{Cluster: &cluster.Cluster{Bin: binaries(t), Dir: t.TempDir(), Env: env}, t: t}
	t.Cleanup(func() {
		procs := c.Procs()
		for _, p := range c.StopAll(20 * time.Second) {
			t.Logf("%s did not exit within 20s of SIGTERM; killed", p.Name)
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("---- %s log (tail) ----\n%s", p.Name, p.Tail(8000))
			}
		}
	})
	return c
}

// newCluster is a cluster on a fresh Postgres database and Redis key prefix,
// with production-like secrets and a signing key.
func newCluster(t *testing.T) *testCluster {
	t.Helper()
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	keyPath := filepath.Join(t.TempDir(), "signing.key")
	_, err := signing.GenerateKeyFile(keyPath)
	require.NoError(t, err)
	return newTestCluster(t, append(os.Environ(),
		"BACKEND_PRIVATE_KEY_PATH="+keyPath,
		"DATABASE_URL="+dbURL,
		"REDIS_URL="+redisURL,
		"REDIS_KEY_PREFIX="+prefix,
		"JWT_SECRET=e2e-"+testenv.RandomSuffix(24),
		"ARGS_ENCRYPTION_KEY="+testenv.RandomSuffix(32), // 32 bytes, hex
		"AUDIT_HMAC_KEY=e2e-audit-"+testenv.RandomSuffix(32),
		"AGENT_ENROLLMENT_SECRET=enroll-"+testenv.RandomSuffix(12),
		"LOG_FORMAT=text",
		"LOG_LEVEL=info",
		"VIWORKS_DEV_MODE=false",
		"AGENT_DRAIN_SECONDS=1",
		"RATE_LIMIT_REQUESTS=1000000", // the tests poll the API from one address
	))
}

func (c *testCluster) getenv(key string) string { return c.Getenv(key) }

func (c *testCluster) run(name string, args ...string) (string, error) { return c.Run(name, args...) }

func (c *testCluster) start(label, name string, env []string, args ...string) *proc {
	c.t.Helper()
	p, err := c.Start(label, name, env, args...)
	require.NoError(c.t, err)
	return p
}

// waitReady polls url until it answers 200.
func waitReady(t *testing.T, url string, p *proc) {
	t.Helper()
	require.NoError(t, cluster.WaitReady(url, p, 30*time.Second))
}

// api is a small REST client.
type api struct {
	base  string
	token string
}

func (a api) do(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			raw, err := json.Marshal(b)
			require.NoError(t, err)
			rd = bytes.NewReader(raw)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	require.NoError(t, err)
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(raw, out), "body: %s", raw)
	}
	return resp.StatusCode
}
