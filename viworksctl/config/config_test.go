package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/viworksctl/config"
)

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "viworks")
	path := filepath.Join(dir, "config.toml")
	empty, err := config.Load(path)
	require.NoError(t, err, "a missing file is an empty configuration")
	require.Empty(t, empty.Contexts)

	exp := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	f := &config.File{CurrentContext: "prod", Contexts: map[string]*config.Context{
		"prod": {Server: "https://viworks.example.com", APIKey: "vwk_secret", Token: "jwt", TokenExpiresAt: &exp},
		"lab":  {Server: "http://localhost:8080"},
	}}
	require.NoError(t, f.Save(path))
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700}, {path, 0o600}} {
		st, err := os.Stat(tc.path)
		require.NoError(t, err)
		require.Equal(t, tc.mode, st.Mode().Perm(), tc.path)
	}
	got, err := config.Load(path)
	require.NoError(t, err)
	require.Equal(t, f, got)
	require.Equal(t, []string{"lab", "prod"}, got.Names())

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left")
}

func TestLoadRefusesBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"unknown key", "current_context = \"a\"\n[contexts.a]\nserver = \"http://x\"\napi_kee = \"typo\"\n", "unknown key contexts.a.api_kee"},
		{"not toml", "current_context = \n", "reading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			_, err := config.Load(path)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// A file others can read holds keys they can read: refused, and a
	// save replaces it with mode 0600.
	for _, mode := range []os.FileMode{0o644, 0o660, 0o602} {
		t.Run(fmt.Sprintf("mode %04o", mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			require.NoError(t, os.WriteFile(path, []byte("current_context = \"a\"\n"), 0o600))
			require.NoError(t, os.Chmod(path, mode))
			_, err := config.Load(path)
			require.ErrorContains(t, err, "chmod 600")
			require.NoError(t, (&config.File{CurrentContext: "a"}).Save(path))
			st, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
			_, err = config.Load(path)
			require.NoError(t, err)
		})
	}
}

func TestDefaultPath(t *testing.T) {
	for _, tc := range []struct {
		name, xdg, want string
	}{
		{"XDG_CONFIG_HOME", "/xdg", "/xdg/viworks/config.toml"},
		{"unset", "", "/home/ann/.config/viworks/config.toml"},
		{"relative is ignored", "rel", "/home/ann/.config/viworks/config.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", "/home/ann")
			t.Setenv("XDG_CONFIG_HOME", tc.xdg)
			got, err := config.DefaultPath()
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
