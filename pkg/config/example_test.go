package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/stretchr/testify/require"
)

// examplePath is the example configuration the release archives ship.
var examplePath = filepath.Join("..", "..", "config.example.toml")

// tomlValues flattens a Config into "section.key" -> printed value.
func tomlValues(c Config) map[string]string {
	out := map[string]string{}
	rv := reflect.ValueOf(c)
	for i := range rv.NumField() {
		section := rv.Type().Field(i).Tag.Get("toml")
		sv := rv.Field(i)
		for j := range sv.NumField() {
			key := sv.Type().Field(j).Tag.Get("toml")
			// A nil and an empty list print alike: both are "none".
			out[section+"."+key] = fmt.Sprint(sv.Field(j).Interface())
		}
	}
	return out
}

// config.example.toml names every key of Config with its default, and
// nothing else, so that it cannot rot: a new key without its line, a changed
// default or a removed key fails here.
func TestExampleConfigHasEveryKeyWithItsDefault(t *testing.T) {
	var raw map[string]map[string]any
	md, err := toml.DecodeFile(examplePath, &raw)
	require.NoError(t, err)
	var inFile []string
	for _, k := range md.Keys() {
		if len(k) == 2 {
			inFile = append(inFile, k.String())
		}
	}
	want := tomlValues(Default())
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sort.Strings(inFile)
	require.Equal(t, keys, inFile, "config.example.toml must list exactly the keys of config.Config")

	var fromFile Config
	md, err = toml.DecodeFile(examplePath, &fromFile)
	require.NoError(t, err)
	require.Empty(t, md.Undecoded())
	require.Equal(t, want, tomlValues(fromFile), "config.example.toml must give each key its default")

	// Each key has a one-line comment just above it.
	data, err := os.ReadFile(examplePath)
	require.NoError(t, err)
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		require.Positive(t, i, l)
		require.True(t, strings.HasPrefix(lines[i-1], "# "), "line %d (%s) needs a comment above it", i+1, l)
	}

	// Loading the file as --config gives the defaults (the placeholder
	// secrets are refused outside dev mode, as without a file).
	f := &Flags{ConfigPath: examplePath}
	cfg, err := f.Load(Default(), func(k string) string {
		return map[string]string{"VIWORKS_DEV_MODE": "true", "BACKEND_AGENT_BIND_ADDRESS": "0.0.0.0"}[k]
	})
	require.NoError(t, err)
	d := Default()
	d.Server.DevMode = true
	require.Equal(t, tomlValues(d), tomlValues(cfg))
}
