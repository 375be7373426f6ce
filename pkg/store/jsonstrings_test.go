package store

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// jsonStringsSeeds are the forms the parsers take (Postgres' and SQLite's
// jsonb text) and the ones they leave to encoding/json.
var jsonStringsSeeds = []string{
	`[]`, `{}`, ` [ ] `, `["echo", "sleep"]`, `["a","b"]`, `{"env": "bench", "rack": "r1"}`, `{"k":"v","k":"w"}`,
	`{"ключ": "значение", "😀": ""}`, `["a\"b"]`, `{"k": "\u00e9"}`, `["a",]`, `["a" "b"]`, `{"k" "v"}`, `{"k": 1}`,
	`[1]`, `null`, ``, `[`, `{`, `{"k":}`, `["a"] x`, "[\"\xff\"]", "{\"k\":\"\x01\"}", `[["a"]]`, `{"a": {"b": "c"}}`,
	`{"a":"b",}`, "\t\n{ \"a\" :\r\"b\" }\n", `["\ud800"]`,
}

// The parsers give what json.Unmarshal gives, or leave the input to it.
func TestDecodeJSONStringsIsUnmarshal(t *testing.T) {
	for _, s := range jsonStringsSeeds {
		checkDecodeStrings(t, []byte(s))
	}
	l, ok := parseStringList([]byte(`["echo", "sleep"]`))
	require.True(t, ok, "the usual list takes the fast path")
	require.Equal(t, []string{"echo", "sleep"}, l)
	m, ok := parseStringMap([]byte(`{"env": "bench", "rack": "r1"}`))
	require.True(t, ok, "the usual map takes the fast path")
	require.Equal(t, map[string]string{"env": "bench", "rack": "r1"}, m)
}

func FuzzDecodeJSONStrings(f *testing.F) {
	for _, s := range jsonStringsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkDecodeStrings)
}

func checkDecodeStrings(t *testing.T, b []byte) {
	var wantL []string
	errL := json.Unmarshal(b, &wantL)
	gotL, err := decodeStringList(b)
	require.Equal(t, errL == nil, err == nil, "list %q: %v / %v", b, errL, err)
	if errL == nil {
		require.Equal(t, wantL, gotL, "list %q", b)
		require.Equal(t, wantL == nil, gotL == nil, "list %q: nil", b)
	}
	var wantM map[string]string
	errM := json.Unmarshal(b, &wantM)
	gotM, err := decodeStringMap(b)
	require.Equal(t, errM == nil, err == nil, "map %q: %v / %v", b, errM, err)
	if errM == nil {
		require.Equal(t, wantM, gotM, "map %q", b)
		require.Equal(t, wantM == nil, gotM == nil, "map %q: nil", b)
	}
}
