package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "viworks-e2e-bin-")
		if buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{"api-server": "./api-server", "agent-gateway": "./agent-gateway", "scheduler": "./scheduler", "agentsim": "./agentsim", "viworks": "./standalone"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
			cmd.Dir = ".."
			out, err := cmd.CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("building %s: %v\n%s", name, err, out)
				return
			}
		}
	})
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// cluster is a set of real processes on one database and key prefix.
type cluster struct {
	t   *testing.T
	bin string
	env []string
	dir string

	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	c := &cluster{t: t, bin: binaries(t), dir: t.TempDir()}
	keyPath := filepath.Join(c.dir, "signing.key")
	_, err := signing.GenerateKeyFile(keyPath)
	require.NoError(t, err)
	c.env = append(os.Environ(),
		"BACKEND_PRIVATE_KEY_PATH="+keyPath,
		"DATABASE_URL="+dbURL,
		"REDIS_URL="+redisURL,
		"REDIS_KEY_PREFIX="+prefix,
		"JWT_SECRET=e2e-"+testenv.RandomSuffix(24),
		"AGENT_ENROLLMENT_SECRET=enroll-"+testenv.RandomSuffix(12),
		"LOG_FORMAT=text",
		"LOG_LEVEL=info",
		"VIWORKS_DEV_MODE=false",
	)
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) getenv(key string) string {
	for i := len(c.env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(c.env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// run runs a binary to completion and returns its stdout.
func (c *cluster) run(name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %v: %w: %s", name, args, err, stderr.String())
	}
	return stdout.String(), nil
}

// start launches a long-running process with extra environment.
func (c *cluster) start(label, name string, env []string, args ...string) *proc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, label+".log")
	f, err := os.Create(logPath)
	require.NoError(c.t, err)
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Env = append(append([]string{}, c.env...), env...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(c.t, cmd.Start())
	p := &proc{name: label, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = f.Close(); close(p.done) }()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

func (c *cluster) stopAll() {
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	start := time.Now()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			c.t.Logf("%s did not exit within 20s of SIGTERM; killing it", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if d := time.Since(start); d > 3*time.Second {
			c.t.Logf("%s took %s to stop", p.name, d.Round(time.Millisecond))
		}
		if c.t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			c.t.Logf("---- %s log (tail) ----\n%s", p.name, b)
		}
	}
}

// waitReady polls url until it answers 200.
func waitReady(t *testing.T, url string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("%s exited before becoming ready:\n%s", p.name, b)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready at %s within 30s", p.name, url)
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
