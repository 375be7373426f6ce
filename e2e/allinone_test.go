package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/pkg/store"
)

// allInOne starts bin/viworks on dataDir and a free port and waits for /readyz.
func allInOne(t *testing.T, c *testCluster, label, dataDir string, extra ...string) (*proc, api) {
	t.Helper()
	port := freePort(t)
	args := append([]string{"--data-dir", dataDir, "--port", strconv.Itoa(port)}, extra...)
	// Embedded mode: no DATABASE_URL/REDIS_URL from the cluster's environment.
	p := c.start(label, "viworks", []string{"DATABASE_URL=", "REDIS_URL="}, args...)
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), p)
	tok, err := c.run("viworks", "token", "--data-dir", dataDir, "--subject", "e2e", "--role", "operator")
	require.NoError(t, err)
	return p, api{base: fmt.Sprintf("http://127.0.0.1:%d", port), token: strings.TrimSpace(tok)}
}

func stop(t *testing.T, p *proc) {
	t.Helper()
	require.True(t, p.Stop(20*time.Second), "%s did not stop within 20s", p.Name)
}

func agentsOf(t *testing.T, a api, status string) map[string]bool {
	var list agentList
	require.Equal(t, http.StatusOK, a.do(t, http.MethodGet, "/api/v1/agents?status="+status, nil, &list))
	out := map[string]bool{}
	for _, ag := range list.Items {
		out[ag.ID] = true
	}
	return out
}

// embeddedCluster is a cluster without Postgres/Redis: only binaries and temp dirs.
func embeddedCluster(t *testing.T) *testCluster {
	return newTestCluster(t, append(os.Environ(), "LOG_FORMAT=text", "RATE_LIMIT_REQUESTS=1000000"))
}

func TestAllInOneSurvivesRestart(t *testing.T) {
	c := embeddedCluster(t)
	dataDir := filepath.Join(t.TempDir(), "data")

	p, cli := allInOne(t, c, "viworks-1", dataDir, "--demo-agents", "3")
	require.Eventually(t, func() bool { return len(agentsOf(t, cli, "online")) == 3 }, 30*time.Second, 50*time.Millisecond)
	sys := system{api: cli}

	var done commandView
	require.Equal(t, http.StatusAccepted, cli.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"message": "before restart"}, "agent_targets": []string{"sim-0", "sim-1", "sim-2"},
	}, &done))
	first := sys.waitCommand(t, done.ID, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, "succeeded", first.Status)
	// The signing key's public half is written beside it, for agents to pin.
	pinned, err := signing.LoadPublicKey(filepath.Join(dataDir, "signing.pub"))
	require.NoError(t, err)
	signKey, err := signing.LoadPrivateKey(filepath.Join(dataDir, "signing.key"))
	require.NoError(t, err)
	require.True(t, pinned.Equal(signKey.Public()))
	// The demo agents' site and labels come from the enrollment secret they enrolled with.
	var demo commandView
	require.Equal(t, http.StatusAccepted, cli.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"message": "demo"}, "selector": map[string]any{"site": "demo", "labels": map[string]string{"role": "demo"}},
	}, &demo))
	require.Len(t, demo.Executions, 3)
	require.Equal(t, "succeeded", sys.waitCommand(t, demo.ID, 20*time.Second, 10*time.Millisecond).Status)

	// Latency in the all-in-one mode, as in the service e2e test.
	var samples []time.Duration
	for i := range 20 {
		start := time.Now()
		var created commandView
		require.Equal(t, http.StatusAccepted, cli.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": "ping"}, "agent_targets": []string{fmt.Sprintf("sim-%d", i%3)},
		}, &created))
		require.Equal(t, "succeeded", sys.waitCommand(t, created.ID, 10*time.Second, time.Millisecond).Status)
		samples = append(samples, time.Since(start))
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	t.Logf("all-in-one POST→succeeded over 20 sequential single-target commands (polling GET every 1ms): median %s, p90 %s, max %s",
		samples[10], samples[18], samples[19])
	stop(t, p)

	// Second start without demo agents: the agents are known but offline.
	p, cli = allInOne(t, c, "viworks-2", dataDir)
	sys = system{api: cli}
	require.Len(t, agentsOf(t, cli, "offline"), 3, "agents survive the restart and are offline without sessions")
	again := sys.waitCommand(t, done.ID, time.Second, 10*time.Millisecond)
	require.Equal(t, "succeeded", again.Status)
	require.Equal(t, "before restart", again.Executions[0].Output, "results survive the restart")

	// A command for an offline agent stays queued until the agent returns.
	var queued commandView
	require.Equal(t, http.StatusAccepted, cli.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"message": "after you return"}, "agent_targets": []string{"sim-1"},
	}, &queued))
	time.Sleep(500 * time.Millisecond)
	var view commandView
	require.Equal(t, http.StatusOK, cli.do(t, http.MethodGet, "/api/v1/commands/"+queued.ID, nil, &view))
	require.Equal(t, "queued", view.Status)
	stop(t, p)

	// Third start with the agents back: the queued command is delivered.
	_, cli = allInOne(t, c, "viworks-3", dataDir, "--demo-agents", "3")
	sys = system{api: cli}
	delivered := sys.waitCommand(t, queued.ID, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "succeeded", delivered.Status)
	require.Equal(t, "after you return", delivered.Executions[0].Output)

	// The audit trail was kept too (read straight from the database file),
	// chained under the key generated into the data directory.
	key, err := os.ReadFile(filepath.Join(dataDir, "audit.key"))
	require.NoError(t, err)
	st, err := store.Open(context.Background(), store.Config{AuditKey: bytes.TrimSpace(key), URL: store.SQLitePrefix + filepath.Join(dataDir, "viworks.db")})
	require.NoError(t, err)
	defer st.Close()
	n, err := st.CountAudit(context.Background(), "command.create")
	require.NoError(t, err)
	require.Equal(t, int64(23), n, "one audit event per created command across restarts")
	n, err = st.CountAudit(context.Background(), "enrollment_secret.revoke")
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "the first run revoked its demo agents' secret when it stopped")
	v, err := st.VerifyAudit(context.Background(), nil)
	require.NoError(t, err)
	require.True(t, v.OK, "%+v", v)
}

func TestAllInOneBadInput(t *testing.T) {
	c := embeddedCluster(t)
	runFail := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(c.Bin, "viworks"), args...)
		cmd.Env = append(os.Environ(), "DATABASE_URL=", "REDIS_URL=")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		require.NoError(t, cmd.Start())
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			require.Error(t, err, "viworks %v must fail", args)
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("viworks %v kept running", args)
		}
		msg := strings.TrimSpace(stderr.String())
		require.NotContains(t, msg, "panic")
		require.NotContains(t, msg, "goroutine")
		require.Equal(t, 1, len(strings.Split(msg, "\n")), "one clear line, got:\n%s", msg)
		return msg
	}

	notADir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notADir, []byte("x"), 0o600))
	msg := runFail("--data-dir", filepath.Join(notADir, "data"))
	require.Contains(t, msg, "data directory")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	msg = runFail("--data-dir", t.TempDir(), "--bind-address", "127.0.0.1", "--port", strconv.Itoa(port))
	require.Contains(t, msg, "address already in use")

	corrupt := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(corrupt, "viworks.db"), bytes.Repeat([]byte("not a database "), 100), 0o600))
	msg = runFail("--data-dir", corrupt, "--port", strconv.Itoa(freePort(t)))
	require.Contains(t, msg, "database")

	msg = runFail("--data-dir", t.TempDir(), "--demo-agents", "-1")
	require.Contains(t, msg, "--demo-agents")

	msg = runFail("token", "--data-dir", t.TempDir(), "--subject", "x", "--role", "admin")
	require.Contains(t, msg, "start `viworks` once")
}

// TestAllInOneDefaultsPastTheirLimits: `make run`'s defaults (100 sessions,
// 50 executions in flight, a queue of 1,000) against more than they allow.
// Sessions past the 100th are refused, the 100 take commands, executions past
// the queue's 1,000 are refused with 429, and the process stays ready.
func TestAllInOneDefaultsPastTheirLimits(t *testing.T) {
	c := embeddedCluster(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	_, cli := allInOne(t, c, "viworks", dataDir, "--demo-agents", "0")
	secret, err := os.ReadFile(filepath.Join(dataDir, "enrollment.secret"))
	require.NoError(t, err)
	c.start("agentsim", "agentsim", nil, "--gateway", strings.Replace(cli.base, "http://", "ws://", 1)+"/ws/agent",
		"--agents", "150", "--prefix", "lim-", "--enrollment-secret", strings.TrimSpace(string(secret)), "--log-level", "error")

	online := func() []string {
		var page agentList
		require.Equal(t, http.StatusOK, cli.do(t, http.MethodGet, "/api/v1/agents?status=online&limit=1000", nil, &page))
		ids := make([]string, len(page.Items))
		for i, a := range page.Items {
			ids[i] = a.ID
		}
		return ids
	}
	require.Eventually(t, func() bool { return len(online()) >= 100 }, 60*time.Second, 250*time.Millisecond)
	time.Sleep(2 * time.Second) // the refused agents retry meanwhile
	ids := online()
	require.Len(t, ids, 100, "sessions past max_agent_connections are refused")

	post := func(verb string, args map[string]any) (int, commandView) {
		var cmd commandView
		code := cli.do(t, http.MethodPost, "/api/v1/commands", map[string]any{"verb": verb, "args": args, "agent_targets": ids}, &cmd)
		return code, cmd
	}
	code, cmd := post("echo", map[string]any{"message": "limits"})
	require.Equal(t, http.StatusAccepted, code)
	require.Equal(t, "succeeded", system{api: cli}.waitCommand(t, cmd.ID, 30*time.Second, 100*time.Millisecond).Status)

	// Ten commands of 100 long sleeps: at most 50 run, so between 950 and 1,000
	// executions wait and the eleventh command's 100 do not fit.
	sleep := func() int {
		return cli.do(t, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "sleep", "args": map[string]any{"seconds": 60}, "agent_targets": ids}, nil)
	}
	for i := range 10 {
		require.Equal(t, http.StatusAccepted, sleep(), "command %d", i)
	}
	code = sleep()
	require.Equal(t, http.StatusTooManyRequests, code, "executions past the queue's 1,000 are refused")

	require.Len(t, online(), 100)
	resp, err := http.Get(cli.base + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
