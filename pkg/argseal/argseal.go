// Package argseal encrypts the secret values of command args at rest.
//
// A value is secret when its key names a secret (IsSecretKey: password,
// token, key, ...), at any depth. Seal replaces each secret value with an
// envelope object {"$sealed": "v1:<key id>:<base64url(nonce|ciphertext)>"}
// holding its JSON encrypted with AES-256-GCM under the current key (the key
// id and the field's name are authenticated with it, so a ciphertext cannot
// be moved to another field). Open turns envelopes back into the values with
// whichever key of the keyring the key id names, so a key can be rotated
// while commands sealed under the previous one are pending. Purge replaces
// envelopes with {"$sealed": "purged"} once the values are no longer needed.
package argseal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// KeySize is the size of an encryption key, in bytes.
const KeySize = 32

// Envelope is the one field of an envelope object; Purged its value once the
// ciphertext is removed.
const (
	Envelope = "$sealed"
	Purged   = "purged"
	version  = "v1"
)

var secretWords = []string{"password", "passwd", "secret", "token", "key", "credential", "private"}

// IsSecretKey reports whether an args key names a secret value.
func IsSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// ParseKey decodes a key given as 64 hex digits or as base64 (standard or
// URL alphabet, padded or not) of 32 bytes.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*KeySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != KeySize {
				return nil, fmt.Errorf("decodes to %d bytes, not %d", len(b), KeySize)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("is neither 64 hex digits nor base64 of %d bytes", KeySize)
}

// KeyID names a key without revealing it: 8 hex digits of a hash of it.
func KeyID(key []byte) string {
	h := sha256.Sum256(append([]byte("viworks-args-key:"), key...))
	return hex.EncodeToString(h[:4])
}

// Keyring holds the current key (sealing and opening) and previous keys
// (opening only).
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// NewKeyring builds a keyring from encoded keys (see ParseKey): current
// seals and opens, previous only open.
func NewKeyring(current string, previous ...string) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	for i, s := range append([]string{current}, previous...) {
		raw, err := ParseKey(s)
		if err != nil {
			return nil, fmt.Errorf("args encryption key %d: %w", i, err)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("args encryption key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("args encryption key %d: %w", i, err)
		}
		id := KeyID(raw)
		if i == 0 {
			k.current = id
		}
		if _, dup := k.aeads[id]; !dup {
			k.aeads[id] = aead
		}
	}
	return k, nil
}

// KeyID is the id of the current key.
func (k *Keyring) KeyID() string { return k.current }

// Seal returns args with every secret value replaced by its envelope, and
// whether it sealed any.
func (k *Keyring) Seal(args []byte) ([]byte, bool, error) {
	return rewrite(args, func(key string, v json.RawMessage) (json.RawMessage, bool, error) {
		aead := k.aeads[k.current]
		nonce := make([]byte, aead.NonceSize())
		_, _ = rand.Read(nonce) // crypto/rand.Read never fails (Go 1.24+)
		ct := aead.Seal(nonce, nonce, v, aad(k.current, key))
		return envelopeJSON(version + ":" + k.current + ":" + base64.RawURLEncoding.EncodeToString(ct)), true, nil
	})
}

// Open returns args with every envelope under a secret key replaced by the
// value it holds. An envelope that was purged, or that no key of the ring
// opens, is an error naming the field (never its value).
func (k *Keyring) Open(args []byte) ([]byte, error) {
	out, _, err := rewrite(args, func(key string, v json.RawMessage) (json.RawMessage, bool, error) {
		env, ok := envelope(v)
		if !ok {
			return nil, false, nil
		}
		if env == Purged {
			return nil, false, fmt.Errorf("args field %q was purged", key)
		}
		parts := strings.SplitN(env, ":", 3)
		if len(parts) != 3 || parts[0] != version {
			return nil, false, fmt.Errorf("args field %q: malformed envelope", key)
		}
		aead, ok := k.aeads[parts[1]]
		if !ok {
			return nil, false, fmt.Errorf("args field %q: sealed with key %s, which is not configured", key, parts[1])
		}
		ct, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || len(ct) < aead.NonceSize() {
			return nil, false, fmt.Errorf("args field %q: malformed envelope", key)
		}
		pt, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], aad(parts[1], key))
		if err != nil {
			return nil, false, fmt.Errorf("args field %q: envelope does not open with key %s", key, parts[1])
		}
		return pt, true, nil
	})
	return out, err
}

// Purge returns args with every envelope under a secret key replaced by the
// purged marker, and whether it changed anything. It needs no key.
func Purge(args []byte) ([]byte, bool, error) {
	return rewrite(args, func(_ string, v json.RawMessage) (json.RawMessage, bool, error) {
		if env, ok := envelope(v); ok && env != Purged {
			return envelopeJSON(Purged), true, nil
		}
		return nil, false, nil
	})
}

func envelopeJSON(s string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{Envelope: s})
	return b
}

func aad(keyID, field string) []byte {
	return []byte("viworks-args/" + version + "/" + keyID + "/" + field)
}

// envelope returns the envelope string of v when v is an envelope object.
func envelope(v json.RawMessage) (string, bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '{' {
		return "", false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(v, &m) != nil || len(m) != 1 {
		return "", false
	}
	var s string
	if raw, ok := m[Envelope]; !ok || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// replacer answers the new value of a secret key's value, or false to keep it.
type replacer func(key string, v json.RawMessage) (json.RawMessage, bool, error)

// rewrite replaces the value of every secret key of args (at any depth; not
// below a secret key) as fn says, and reports whether any value changed.
// Args left unchanged are returned as given.
func rewrite(args []byte, fn replacer) ([]byte, bool, error) {
	if !json.Valid(args) {
		return nil, false, fmt.Errorf("args are not valid JSON")
	}
	out, changed, err := walk(args, fn)
	if err != nil || !changed {
		return args, false, err
	}
	return out, true, nil
}

func walk(v json.RawMessage, fn replacer) (json.RawMessage, bool, error) {
	t := bytes.TrimSpace(v)
	if len(t) == 0 {
		return v, false, nil
	}
	switch t[0] {
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(t, &m); err != nil {
			return nil, false, fmt.Errorf("args are not JSON: %w", err)
		}
		dirty := false
		for key, val := range m {
			var nv json.RawMessage
			var ok bool
			var err error
			if IsSecretKey(key) {
				nv, ok, err = fn(key, val)
			} else {
				nv, ok, err = walk(val, fn)
			}
			if err != nil {
				return nil, false, err
			}
			if ok {
				m[key], dirty = nv, true
			}
		}
		if !dirty {
			return v, false, nil
		}
		b, err := json.Marshal(m)
		return b, true, err
	case '[':
		var a []json.RawMessage
		if err := json.Unmarshal(t, &a); err != nil {
			return nil, false, fmt.Errorf("args are not JSON: %w", err)
		}
		dirty := false
		for i, val := range a {
			nv, ok, err := walk(val, fn)
			if err != nil {
				return nil, false, err
			}
			if ok {
				a[i], dirty = nv, true
			}
		}
		if !dirty {
			return v, false, nil
		}
		b, err := json.Marshal(a)
		return b, true, err
	}
	return v, false, nil
}
