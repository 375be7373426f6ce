package sim_test

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agentsim/sim"
)

// envRunAgentsim makes the test binary run agentsim's main instead of the
// tests, so the conformance kit can start it as the agent under test.
const envRunAgentsim = "AGENTSIM_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunAgentsim) == "1" {
		ctx, stop := signalContext()
		code := sim.Main(ctx, os.Args[1:], os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// agentCmd is agentsim (this test binary) as the agent under test, told the
// kit's gateway, secret and key through the environment the kit sets.
func agentCmd(t *testing.T, extra string) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	return envRunAgentsim + `=1 exec '` + exe + `' --gateway "$VIWORKS_GATEWAY_URL" --agents 1 --prefix conformance- ` +
		`--enrollment-secret "$VIWORKS_ENROLLMENT_SECRET" --log-level debug ` + extra
}

func runKit(t *testing.T, cmd string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, log bytes.Buffer
	logFile := t.TempDir() + "/agent.log"
	code := sim.ConformanceMain(ctx, []string{"--agent-cmd", cmd, "--timeout", "10s", "--agent-log", logFile}, &out, &log)
	if b, err := os.ReadFile(logFile); err == nil && code != 0 {
		t.Logf("agent log:\n%s", b)
	}
	return code, out.String() + log.String()
}

// An agent on the Go SDK passes every check of the kit.
func TestConformanceSDKAgentPasses(t *testing.T) {
	code, report := runKit(t, agentCmd(t, `--signing-public-key "$VIWORKS_SIGNING_PUBLIC_KEY_FILE"`))
	t.Log(report)
	require.Equal(t, 0, code, report)
	for _, check := range sim.ConformanceChecks {
		require.Contains(t, report, "PASS  "+check+"\n", report)
	}
	require.NotContains(t, report, "FAIL")
}

// An agent that does not verify signatures runs a tampered COMMAND: the kit
// says so and exits non-zero.
func TestConformanceBrokenAgentFails(t *testing.T) {
	code, report := runKit(t, agentCmd(t, `--trust-on-first-use=false --insecure-skip-verify`))
	require.Equal(t, 1, code, report)
	require.Contains(t, report, "FAIL  bad_signature: ", report)
	require.Contains(t, report, "PASS  echo\n", report)
	require.True(t, strings.Contains(report, "checks passed"), report)
}

func TestConformanceNeedsAgentCmd(t *testing.T) {
	var out, errs bytes.Buffer
	require.Equal(t, 2, sim.ConformanceMain(context.Background(), nil, &out, &errs))
	require.Contains(t, errs.String(), "--agent-cmd is required")
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
