package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/testenv"
)

// privateRedis runs a redis-server of the test's own on a free port, so the
// test may stop and restart it without touching the shared one.
func privateRedis(t *testing.T, port int) func() {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv(testenv.EnvRequire) == "1" {
			t.Fatalf("redis-server is required: %v", err)
		}
		t.Skipf("skipping: redis-server not installed (%v)", err)
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	defer c.Close()
	require.Eventually(t, func() bool { return c.Ping(context.Background()).Err() == nil }, 5*time.Second, 20*time.Millisecond)
	stop := func() {
		_ = cmd.Process.Kill()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// TestRedisRestartHealsPresence: Redis loses everything (restarted empty);
// gateways re-register their sessions' presence on the next heartbeats and
// commands flow again, with no agent reconnecting.
func TestRedisRestartHealsPresence(t *testing.T) {
	port := freePort(t)
	stop := privateRedis(t, port)
	c := newCluster(t)
	redisURL := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	c.Env = append(c.Env, "REDIS_URL="+redisURL, "AGENT_HEARTBEAT_INTERVAL=1")
	sys := startSystem(t, c)
	c.start("agentsim", "agentsim", nil, "--gateway", sys.gateways[0], "--agents", "3", "--prefix", "rr-",
		"--enrollment-secret", sys.enrollKey)
	sys.waitOnline(t, 3)

	run := func() string {
		var created commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": "still here"}, "agent_targets": []string{"rr-0", "rr-1", "rr-2"},
		}, &created))
		return sys.waitCommand(t, created.ID, 60*time.Second, 50*time.Millisecond).Status
	}
	require.Equal(t, "succeeded", run())

	stop()
	privateRedis(t, port) // empty: presence and subscriptions are gone
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer rc.Close()
	prefix := c.Getenv("REDIS_KEY_PREFIX")
	require.Eventually(t, func() bool {
		keys, err := rc.Keys(context.Background(), prefix+"presence:*").Result()
		return err == nil && len(keys) == 3
	}, 30*time.Second, 100*time.Millisecond, "gateways register their sessions again")
	require.Equal(t, "succeeded", run(), "commands reach the agents again")

	for _, p := range c.Procs() {
		if strings.HasPrefix(p.Name, "agentsim") {
			require.NotContains(t, p.Tail(100000), "agent disconnected", "no agent had to reconnect")
		}
	}
}
