package buildinfo

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPrintIfAsked(t *testing.T) {
	Version, Commit, Date = "v1.2.3-4-gabcdef0", "abcdef0123", "2026-12-03T10:00:00Z"
	t.Cleanup(func() { Version, Commit, Date = "dev", "unknown", "unknown" })
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"double dash", []string{"--version"}, "viworks v1.2.3-4-gabcdef0 (commit abcdef0123, built 2026-12-03T10:00:00Z)\n"},
		{"single dash", []string{"-version", "ignored"}, "viworks v1.2.3-4-gabcdef0 (commit abcdef0123, built 2026-12-03T10:00:00Z)\n"},
		{"not first", []string{"--port", "1", "--version"}, ""},
		{"subcommand", []string{"token"}, ""},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			asked := PrintIfAsked(&b, "viworks", tt.args)
			require.Equal(t, tt.want != "", asked)
			require.Equal(t, tt.want, b.String())
		})
	}
}
