package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/buildinfo"
)

// Bad flags and configurations end with a clear message and exit code 2,
// never a panic.
func TestCommandLineErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	require.NoError(t, os.WriteFile(bad, []byte("gateway = \"http://x\"\nverbs = [\"shell\"]\n"), 0o600))
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"missing config": {[]string{"--config", filepath.Join(t.TempDir(), "none.toml")}, 2, "no such file"},
		"bad config":     {[]string{"--config", bad}, 2, `verbs: unknown verb "shell"`},
		"unknown flag":   {[]string{"--nope"}, 2, "flag provided but not defined"},
		"extra argument": {[]string{"--config", bad, "extra"}, 2, `unexpected argument "extra"`},
		"version":        {[]string{"--version"}, 0, ""},
	} {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			require.Equal(t, tc.code, run(tc.args, &stdout, &stderr))
			require.Contains(t, stderr.String(), tc.want)
			require.NotContains(t, stderr.String(), "panic")
			if tc.code == 0 {
				require.Equal(t, buildinfo.String("viworks-agent")+"\n", stdout.String())
			}
			require.False(t, strings.Contains(stderr.String(), "goroutine"))
		})
	}
}
