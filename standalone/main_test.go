package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHelpAndUnknownCommands: help prints the usage and exits 0, an unknown
// command or argument prints it and exits 2; neither starts a server.
func TestHelpAndUnknownCommands(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"help"}, 0},
		{[]string{"-h"}, 0},
		{[]string{"--help"}, 0},
		{[]string{"--port", "1", "-h"}, 0},
		{[]string{"serve"}, 2},
		{[]string{"tokens"}, 2},
		{[]string{"--data-dir", dir, "extra"}, 2},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		require.Equal(t, tc.code, code, "%v: %s%s", tc.args, stdout.String(), stderr.String())
		out := stdout.String()
		if tc.code != 0 {
			out = stderr.String()
		}
		require.Contains(t, out, "viworks token", tc.args)
		require.Contains(t, out, "-data-dir", tc.args)
		require.Contains(t, out, "-port", tc.args)
	}
}
