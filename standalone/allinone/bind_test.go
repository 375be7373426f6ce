package allinone

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
)

func TestListensOnLoopbackUnlessTold(t *testing.T) {
	dir := t.TempDir()
	load := func(args ...string) config.Config {
		t.Helper()
		cfg, err := service.LoadConfigWith(flag.NewFlagSet("viworks", flag.ContinueOnError), args, func() (config.Config, error) { return BaseConfig(dir, true) })
		require.NoError(t, err)
		return cfg
	}
	t.Setenv("BACKEND_AGENT_BIND_ADDRESS", "")
	require.Equal(t, "127.0.0.1", load().Server.BindAddress)
	require.Equal(t, "0.0.0.0", load("--bind-address", "0.0.0.0").Server.BindAddress)
	t.Setenv("BACKEND_AGENT_BIND_ADDRESS", "::")
	require.Equal(t, "::", load().Server.BindAddress)
}
