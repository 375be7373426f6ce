package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestViworksctlAgainstServices runs the real viworksctl against the split
// services on Postgres and Redis (api-server, scheduler, two gateways): an
// admin issues an API key and an enrollment secret, the operator logs in,
// sends to agents on both gateways with --wait (exit 0) and a failing verb
// (exit 1). viworksctl/main_test.go covers the rest against bin/viworks.
func TestViworksctlAgainstServices(t *testing.T) {
	c := newCluster(t)
	sys := startSystem(t, c)
	ctl := filepath.Join(t.TempDir(), "viworksctl")
	build := exec.Command("go", "build", "-o", ctl, "./viworksctl")
	build.Dir = ".."
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building viworksctl:\n%s", out)

	cfg := t.TempDir()
	run := func(stdin string, env []string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(ctl, args...)
		cmd.Env = append(os.Environ(), append([]string{"XDG_CONFIG_HOME=" + cfg, "VIWORKS_SERVER=", "VIWORKS_TOKEN="}, env...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return buf.String(), ee.ExitCode()
		}
		require.NoError(t, err)
		return buf.String(), 0
	}
	admin := []string{"VIWORKS_SERVER=" + sys.api.base, "VIWORKS_TOKEN=" + sys.admin(t, c).token}

	key, code := run("", admin, "api-keys", "create", "--name", "e2e-ctl", "--role", "operator", "--key-only")
	require.Equal(t, 0, code, key)
	secret, code := run("", admin, "enrollment-secrets", "create", "--name", "ctl fleet", "--site", "ctl", "--label", "role=sim", "-o", "json")
	require.Equal(t, 0, code, secret)
	var sec struct {
		Secret string `json:"secret"`
	}
	require.NoError(t, json.Unmarshal([]byte(secret), &sec), secret)
	for i, gw := range sys.gateways {
		c.start("agentsim-ctl-"+string(rune('a'+i)), "agentsim", nil, "--gateway", gw, "--agents", "3", "--prefix", "ctl-"+string(rune('a'+i))+"-", "--enrollment-secret", sec.Secret, "--telemetry-interval", "1s")
	}
	sys.waitOnline(t, 6)

	login, code := run(key, nil, "login", "--server", sys.api.base)
	require.Equal(t, 0, code, login)
	sent, code := run("", nil, "commands", "send", "echo", "--arg", "message=split", "--selector", "site=ctl,label=role=sim", "--wait")
	require.Equal(t, 0, code, sent)
	require.Contains(t, sent, "6 of 6 targets succeeded")
	failed, code := run("", nil, "commands", "send", "fail", "--selector", "site=ctl", "--any", "--wait")
	require.Equal(t, 1, code, failed)
	require.Contains(t, failed, "failed  exit 1  error: simulated failure")

	// Telemetry (sent every second, written within the gateways' flush
	// interval) as a table of sparklines.
	require.Eventually(t, func() bool {
		out, code := run("", nil, "agents", "telemetry", "ctl-a-0", "--since", "5m", "--metric", "cpu_percent", "-o", "json")
		require.Equal(t, 0, code, out)
		return strings.Contains(out, `"metric":"cpu_percent"`)
	}, 30*time.Second, 500*time.Millisecond, "no telemetry from ctl-a-0")
	table, code := run("", nil, "agents", "telemetry", "ctl-a-0", "--since", "5m", "--step", "1s", "--metric", "cpu_percent", "--metric", "load1")
	require.Equal(t, 0, code, table)
	require.Regexp(t, `(?m)^cpu_percent\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[▁▂▃▄▅▆▇█]+$`, table)
}
