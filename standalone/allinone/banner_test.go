package allinone

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/config"
)

// TestBannerKeepsSecretsOutOfLogs: at a terminal the banner shows the
// enrollment secret and an admin token; when its output is a log (systemd's
// journal) it shows neither, and says where they are.
func TestBannerKeepsSecretsOutOfLogs(t *testing.T) {
	jwt, err := auth.NewJWT(auth.Config{Secret: []byte(strings.Repeat("s", 48)), Issuer: "viworks", Audience: "viworks-api"})
	require.NoError(t, err)
	cfg := config.Default()
	cfg.Security.AgentEnrollmentSecret = "enroll-secret-value-0123456789"
	for _, tc := range []struct {
		name      string
		logOutput bool
		secrets   bool
	}{
		{"terminal", false, true},
		{"journal", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			require.NoError(t, printBanner(&out, cfg, Options{DataDir: "/var/lib/viworks", DemoAgents: 2, LogOutput: tc.logOutput}, jwt))
			require.Contains(t, out.String(), "ready\n")
			require.Equal(t, tc.secrets, strings.Contains(out.String(), cfg.Security.AgentEnrollmentSecret), out.String())
			require.Equal(t, tc.secrets, strings.Contains(out.String(), "TOKEN=ey"), out.String())
			if !tc.secrets {
				require.Contains(t, out.String(), "viworks token --data-dir /var/lib/viworks")
			}
		})
	}
}
