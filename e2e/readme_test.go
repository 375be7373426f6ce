package e2e

import (
	"bufio"
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
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// quickstart returns the README's quick-start commands, verbatim.
func quickstart(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(raw), "<!-- quickstart:begin -->")
	require.True(t, ok, "README lacks the quickstart markers")
	block, _, ok := strings.Cut(rest, "<!-- quickstart:end -->")
	require.True(t, ok)
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```bash")
	block = strings.TrimSuffix(block, "```")
	return strings.TrimSpace(block)
}

// TestReadmeQuickStart runs `make run` as the README says, in a fresh working
// directory (bin/ linked to the build, data/ new), then the README's tour
// commands verbatim but for the port: a free one, passed as `make run PORT=N`
// (the README's port 8080 may be taken on a developer's machine). It needs no
// Postgres or Redis.
func TestReadmeQuickStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	work := t.TempDir()
	require.NoError(t, os.Symlink(filepath.Join(root, "bin"), filepath.Join(work, "bin")))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	started := time.Now()
	run := exec.CommandContext(ctx, "make", "-C", root, "run", "DATA_DIR="+filepath.Join(work, "data"), fmt.Sprintf("PORT=%d", port))
	run.Dir = work
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := run.StdoutPipe()
	require.NoError(t, err)
	run.Stderr = run.Stdout
	require.NoError(t, run.Start())
	stopped := make(chan struct{})
	t.Cleanup(func() {
		_ = syscall.Kill(-run.Process.Pid, syscall.SIGINT)
		select {
		case <-stopped:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
		}
	})

	ready := make(chan struct{})
	var output strings.Builder
	go func() {
		defer close(stopped)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			output.WriteString(sc.Text() + "\n")
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		_ = run.Wait()
	}()
	select {
	case <-ready:
	case <-stopped:
		t.Fatalf("make run exited before it was ready:\n%s", output.String())
	case <-time.After(4 * time.Minute):
		t.Fatalf("make run not ready after 4 minutes:\n%s", output.String())
	}

	t.Logf("make run: healthy API %s after start (includes the build)", time.Since(started).Round(time.Millisecond))

	// The user reads the banner first; by then the demo agents are online. Wait
	// for sim-0 explicitly so the test does not race the simulator.
	tok, err := exec.Command(filepath.Join(root, "bin", "viworks"), "token", "--data-dir", filepath.Join(work, "data"), "--subject", "readme-test", "--role", "viewer").Output()
	require.NoError(t, err)
	cli := api{base: fmt.Sprintf("http://127.0.0.1:%d", port), token: strings.TrimSpace(string(tok))}
	require.Eventually(t, func() bool {
		var list agentList
		if cli.do(t, http.MethodGet, "/api/v1/agents?status=online", nil, &list) != http.StatusOK {
			return false
		}
		for _, a := range list.Items {
			if a.ID == "sim-0" {
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "sim-0 never came online")

	script := strings.ReplaceAll(quickstart(t), "localhost:8080", fmt.Sprintf("localhost:%d", port))
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = work
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "quick start failed:\n%s", out)
	// The commands print JSON documents back to back; decode them in order.
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var agents agentList
	require.NoError(t, dec.Decode(&agents), "agents list: %s", out)
	require.NotEmpty(t, agents.Items)
	var cmdView struct {
		commandView
		Args map[string]any `json:"args"`
	}
	require.NoError(t, dec.Decode(&cmdView), "command: %s", out)
	last := string(out)
	require.Equal(t, "succeeded", cmdView.Status, last)
	require.Equal(t, "created panel user testuser", cmdView.Executions[0].Output)
	require.Equal(t, "REDACTED", cmdView.Args["password"])
	require.NotContains(t, string(out), "securepass123", "the password never comes back")

	// The quick start ends with "open http://localhost:8080/": the dashboard.
	raw, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(raw), "<!-- dashboard:begin -->")
	require.True(t, ok, "README lacks the dashboard markers")
	block, _, _ := strings.Cut(rest, "<!-- dashboard:end -->")
	url := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(strings.Trim(strings.TrimSpace(block), "`")), "open "))
	require.Equal(t, "http://localhost:8080/", url)
	resp, err := http.Get(strings.Replace(url, "localhost:8080", fmt.Sprintf("127.0.0.1:%d", port), 1))
	require.NoError(t, err)
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), `<label for="credential">API key or token</label>`)
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
}
