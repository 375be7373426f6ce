package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestResultSurvivesGatewayKill: an agent is running a command when its gateway
// is killed (-9). The agent finishes, keeps the result in its outbox, connects
// to the gateway that replaces the dead one, sends it again, and it is stored:
// the command ends succeeded, its execution attempted once.
func TestResultSurvivesGatewayKill(t *testing.T) {
	c := newCluster(t)
	sys := startSystem(t, c)
	c.start("agentsim", "agentsim", nil, "--gateway", sys.gateways[0], "--agents", "1", "--prefix", "gk-",
		"--enrollment-secret", sys.enrollKey)
	sys.waitOnline(t, 1)

	var created commandView
	require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "sleep", "args": map[string]any{"seconds": 2}, "agent_targets": []string{"gk-0"}, "timeout_seconds": 120,
	}, &created))
	require.Eventually(t, func() bool {
		var v commandView
		sys.api.do(t, http.MethodGet, "/api/v1/commands/"+created.ID, nil, &v)
		return v.Counts["running"] == 1
	}, 10*time.Second, 10*time.Millisecond)

	// Kill gateway-1 hard, then bring a new gateway up on the same port.
	var gw1 *proc
	for _, p := range c.Procs() {
		if p.Name == "gateway-1" {
			gw1 = p
		}
	}
	require.NotNil(t, gw1)
	require.NoError(t, gw1.Cmd.Process.Signal(syscall.SIGKILL))
	<-gw1.Done
	port := portOf(t, sys.gateways[0])
	time.Sleep(2500 * time.Millisecond) // the agent finishes its sleep while disconnected
	gw := c.start("gateway-1b", "agent-gateway", []string{"VIWORKS_INSTANCE_ID=gw-1b"}, "--port", strconv.Itoa(port))
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), gw)

	done := sys.waitCommand(t, created.ID, 60*time.Second, 50*time.Millisecond)
	require.Equal(t, "succeeded", done.Status, "the result sent after reconnecting is stored")
	require.Equal(t, 1, done.Executions[0].Attempts, "not run a second time")
}

func portOf(t *testing.T, wsURL string) int {
	t.Helper()
	var port int
	_, err := fmt.Sscanf(wsURL, "ws://127.0.0.1:%d/ws/agent", &port)
	require.NoError(t, err)
	return port
}
