package apiserver

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"

	"github.com/viworks/backend-agent/pkg/store"
)

var secretWords = []string{"password", "passwd", "secret", "token", "key", "credential", "private"}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// redactArgs replaces the values of secret-looking keys (at any depth) so that
// args can be shown and audited without their secrets.
func redactArgs(args store.JSON) json.RawMessage {
	var v any
	dec := json.NewDecoder(bytes.NewReader(args))
	dec.UseNumber() // keep large integers exact
	if err := dec.Decode(&v); err != nil {
		return json.RawMessage(`{}`)
	}
	b, err := json.Marshal(redactValue(v))
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return b
}

func redactValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if isSecretKey(k) {
				t[k] = "REDACTED"
			} else {
				t[k] = redactValue(val)
			}
		}
	case []any:
		for i := range t {
			t[i] = redactValue(t[i])
		}
	}
	return v
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
