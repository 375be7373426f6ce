package apiserver

import (
	"bytes"
	"encoding/json"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/store"
)

// redactArgs replaces the values of secret-looking keys (argseal.IsSecretKey,
// at any depth) so that args can be shown and audited without their secrets
// (nor, when sealed, their ciphertexts).
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
			if argseal.IsSecretKey(k) {
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
