package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The shipped systemd unit restarts the agent always, runs it with the
// documented command line and is hardened; systemd-analyze accepts it where
// it is installed.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("../deploy/systemd/viworks-agent.service")
	require.NoError(t, err)
	unit := string(b)
	for _, line := range []string{
		"ExecStart=/usr/local/bin/viworks-agent --config /etc/viworks-agent/agent.toml",
		"Restart=always", "StateDirectory=viworks-agent", "StateDirectoryMode=0700", "NoNewPrivileges=true",
		"ProtectSystem=true", "PrivateTmp=true", "ProtectKernelModules=true", "RestrictSUIDSGID=true", "KillMode=mixed",
	} {
		require.Contains(t, strings.Split(unit, "\n"), line)
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; the unit's lines were checked")
	}
	path := filepath.Join(t.TempDir(), "viworks-agent.service")
	unit = strings.Replace(unit, "ExecStart=/usr/local/bin/viworks-agent", "ExecStart="+filepath.Join(binaries(t), "viworks-agent"), 1)
	require.NoError(t, os.WriteFile(path, []byte(unit), 0o644))
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Empty(t, strings.TrimSpace(string(out)))
}
