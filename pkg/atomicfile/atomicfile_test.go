package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/atomicfile"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	for _, content := range []string{"first\n", "second, longer than the first\n", ""} {
		require.NoError(t, atomicfile.Write(path, []byte(content)))
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, content, string(got))
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 1, "no temporary file left behind")
	}
	require.Error(t, atomicfile.Write(filepath.Join(dir, "missing", "x"), []byte("x")), "the directory must exist")
}

func TestWriteMode(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o600, 0o640} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "public")
			require.NoError(t, atomicfile.WriteMode(path, []byte("key\n"), mode))
			st, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, mode, st.Mode().Perm())
		})
	}
}
