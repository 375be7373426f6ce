// Package config reads and writes viworksctl's configuration file: the
// installations (contexts) an operator logged in to, each with its server,
// API key and latest token.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/viworks/backend-agent/pkg/atomicfile"
)

// DefaultContext is the name of the context login creates without --context.
const DefaultContext = "default"

// File is the configuration file.
type File struct {
	CurrentContext string              `toml:"current_context"`
	Contexts       map[string]*Context `toml:"contexts"`
}

// Context is one installation.
type Context struct {
	Server         string     `toml:"server"`
	APIKey         string     `toml:"api_key,omitempty"`
	Token          string     `toml:"token,omitempty"`
	TokenExpiresAt *time.Time `toml:"token_expires_at,omitempty"`
}

// DefaultPath is $XDG_CONFIG_HOME/viworks/config.toml, or
// ~/.config/viworks/config.toml when XDG_CONFIG_HOME is unset or relative.
func DefaultPath() (string, error) {
	if dir := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "viworks", "config.toml"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the configuration directory: %w", err)
	}
	return filepath.Join(home, ".config", "viworks", "config.toml"), nil
}

// Load reads path; a missing file is an empty configuration, a file others
// may read or write (it holds API keys) is refused.
func Load(path string) (*File, error) {
	f := &File{Contexts: map[string]*Context{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable or writable by others (mode %04o) and holds API keys: chmod 600 it", path, st.Mode().Perm())
	}
	md, err := toml.Decode(string(raw), f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		return nil, fmt.Errorf("reading %s: unknown key %s", path, un[0])
	}
	if f.Contexts == nil {
		f.Contexts = map[string]*Context{}
	}
	for name, c := range f.Contexts {
		if c == nil {
			f.Contexts[name] = &Context{}
		}
	}
	return f, nil
}

// Save writes the file atomically with mode 0600, creating its directory
// with mode 0700.
func (f *File) Save(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	var buf bytes.Buffer
	buf.WriteString("# viworksctl configuration: API keys and tokens; keep it private (mode 0600).\n")
	if err := toml.NewEncoder(&buf).Encode(f); err != nil {
		return fmt.Errorf("encoding the configuration: %w", err)
	}
	if err := atomicfile.Write(path, buf.Bytes()); err != nil {
		return fmt.Errorf("saving the configuration: %w", err)
	}
	return nil
}

// Names are the contexts' names, sorted.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Contexts))
	for n := range f.Contexts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
