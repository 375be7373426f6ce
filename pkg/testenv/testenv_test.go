package testenv

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNamesSayWhose: databases and key prefixes carry the package's name.
func TestNamesSayWhose(t *testing.T) {
	require.Equal(t, "testenv", suite())
	u, err := url.Parse(Postgres(t))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(u.Path, "/viworks_test_testenv_"), u.Path)
	_, prefix := Redis(t)
	require.True(t, strings.HasPrefix(prefix, "viworks-test-testenv-"), prefix)
}
