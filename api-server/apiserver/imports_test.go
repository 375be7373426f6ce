package apiserver

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAPIDoesNotSpeakTheWireProtocol: the API checks ids and attributes with
// pkg/agentspec and talks to gateways through the bus's typed sender; it does
// not import the agent wire protocol.
func TestAPIDoesNotSpeakTheWireProtocol(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range parsed.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			require.NoError(t, err)
			require.NotEqual(t, "github.com/viworks/backend-agent/pkg/protocol", path, "%s imports the wire protocol", f)
		}
	}
}
