// Package signing signs and verifies COMMAND frames (docs/protocol.md) with Ed25519
// over canonical bytes; docs/protocol.md specifies the format for agents
// written in other languages.
package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// Domain is the first element of the canonical array: it separates COMMAND
// signatures from anything else the same key might ever sign, and versions
// the format.
const Domain = "viworks.command.v1"

// KeyIDPrefix starts every key id.
const KeyIDPrefix = "ed25519:"

// Verification errors; Verify wraps one of them.
var (
	// ErrUnknownKey: the command names no key id, or one the verifier does not trust.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrMalformedSignature: the signature is missing, not base64 or not 64 bytes.
	ErrMalformedSignature = errors.New("malformed signature")
	// ErrBadSignature: the signature does not match the command (tampered, or
	// signed by another key), or the command cannot be canonicalised.
	ErrBadSignature = errors.New("bad signature")
)

// KeyID is derived from the public key: "ed25519:" + first 16 hex chars of sha256(pub).
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return KeyIDPrefix + hex.EncodeToString(sum[:])[:16]
}

// CanonicalBytes are the exact bytes signed for a COMMAND: every field except
// Signature, in a fixed order, as one JSON array without insignificant
// whitespace, so that no field can bleed into another:
//
//	["viworks.command.v1", command_id, execution_id, agent_id, verb, <canonical args>,
//	 requested_by, issued_at, expires_at, nonce, key_id]
//
// Times are RFC 3339 in UTC with trailing zeros of the fraction trimmed
// (time.RFC3339Nano after .UTC()). The canonical args are the args JSON with
// object keys sorted by UTF-16 code units (RFC 8785), no whitespace, numbers
// exactly as written, strings escaped as encoding/json does without HTML
// escaping; absent, empty or null args are {}. Args that are not valid JSON,
// contain a duplicate object key or invalid UTF-8 are an error, as is invalid
// UTF-8 in any string field.
func CanonicalBytes(c protocol.Command) ([]byte, error) {
	args, err := CanonicalArgs(c.Args)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := newStringEncoder(&buf)
	buf.WriteByte('[')
	fields := []struct{ name, v string }{
		{"domain", Domain},
		{"command_id", c.CommandID},
		{"execution_id", c.ExecutionID},
		{"agent_id", c.AgentID},
		{"verb", c.Verb},
		{"args", ""},
		{"requested_by", c.RequestedBy},
		{"issued_at", formatTime(c.IssuedAt)},
		{"expires_at", formatTime(c.ExpiresAt)},
		{"nonce", c.Nonce},
		{"key_id", c.KeyID},
	}
	for i, f := range fields {
		if i > 0 {
			buf.WriteByte(',')
		}
		if f.name == "args" {
			buf.Write(args)
			continue
		}
		if !utf8.ValidString(f.v) {
			return nil, fmt.Errorf("signing: %s is not valid UTF-8", f.name)
		}
		if err := enc.write(f.v); err != nil {
			return nil, err
		}
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// CanonicalArgs returns the canonical form of a COMMAND's args as described
// at CanonicalBytes. Canonicalising canonical args returns them unchanged.
func CanonicalArgs(raw json.RawMessage) ([]byte, error) {
	trimmed := bytes.Trim(raw, " \t\r\n")
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return []byte("{}"), nil
	}
	if !utf8.Valid(trimmed) {
		return nil, errors.New("signing: args are not valid UTF-8")
	}
	if !json.Valid(trimmed) {
		return nil, errors.New("signing: args are not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	root, err := parseValue(dec)
	if err != nil {
		return nil, fmt.Errorf("signing: args: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("signing: args: data after the JSON value")
	}
	var buf bytes.Buffer
	buf.Grow(len(trimmed))
	if err := root.write(&buf, newStringEncoder(&buf)); err != nil {
		return nil, fmt.Errorf("signing: args: %w", err)
	}
	return buf.Bytes(), nil
}

// node is a parsed JSON value. The whole value is parsed before anything is
// written, so writing costs one pass whatever the nesting depth.
type node struct {
	kind    byte   // '{', '[', '"' (string) or 0 (number, true, false, null: literal)
	literal string // the string, or the literal as written
	members []member
	items   []*node
}

type member struct {
	key   []uint16 // sort key: the name in UTF-16 code units (RFC 8785)
	name  string
	value *node
}

// parseValue reads one JSON value (already known to be valid) from dec.
func parseValue(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return parseObject(dec)
		case '[':
			n := &node{kind: '['}
			for dec.More() {
				item, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, item)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return nil, err
			}
			return n, nil
		}
		return nil, fmt.Errorf("unexpected %q", t)
	case string:
		return &node{kind: '"', literal: t}, nil
	case json.Number:
		return &node{literal: string(t)}, nil
	case bool:
		if t {
			return &node{literal: "true"}, nil
		}
		return &node{literal: "false"}, nil
	case nil:
		return &node{literal: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected token %T", tok)
}

func parseObject(dec *json.Decoder) (*node, error) {
	n := &node{kind: '{'}
	seen := map[string]struct{}{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("object key is %T, not a string", tok)
		}
		if _, dup := seen[name]; dup {
			return nil, fmt.Errorf("duplicate object key %q", truncate(name, 64))
		}
		seen[name] = struct{}{}
		v, err := parseValue(dec)
		if err != nil {
			return nil, err
		}
		n.members = append(n.members, member{key: utf16.Encode([]rune(name)), name: name, value: v})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	slices.SortFunc(n.members, func(a, b member) int { return slices.Compare(a.key, b.key) })
	return n, nil
}

func (n *node) write(out *bytes.Buffer, enc *stringEncoder) error {
	switch n.kind {
	case '{':
		out.WriteByte('{')
		for i, m := range n.members {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := enc.write(m.name); err != nil {
				return err
			}
			out.WriteByte(':')
			if err := m.value.write(out, enc); err != nil {
				return err
			}
		}
		out.WriteByte('}')
	case '[':
		out.WriteByte('[')
		for i, item := range n.items {
			if i > 0 {
				out.WriteByte(',')
			}
			if err := item.write(out, enc); err != nil {
				return err
			}
		}
		out.WriteByte(']')
	case '"':
		return enc.write(n.literal)
	default:
		out.WriteString(n.literal)
	}
	return nil
}

// stringEncoder writes JSON strings as encoding/json does with HTML escaping
// off: '"' and '\\' escaped, control characters as \b \f \n \r \t or \u00XX,
// U+2028 and U+2029 as \u2028 and \u2029, everything else as UTF-8.
type stringEncoder struct {
	dst     *bytes.Buffer
	scratch bytes.Buffer
	enc     *json.Encoder
}

func newStringEncoder(dst *bytes.Buffer) *stringEncoder {
	s := &stringEncoder{dst: dst}
	s.enc = json.NewEncoder(&s.scratch)
	s.enc.SetEscapeHTML(false)
	return s
}

func (s *stringEncoder) write(v string) error {
	s.scratch.Reset()
	if err := s.enc.Encode(v); err != nil {
		return err
	}
	s.dst.Write(bytes.TrimSuffix(s.scratch.Bytes(), []byte("\n")))
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Signer signs COMMANDs with a primary key and knows the public keys the
// platform announces (primary plus, during a rotation, the previous ones).
// It is safe for concurrent use.
type Signer struct {
	priv  ed25519.PrivateKey
	pub   ed25519.PublicKey
	keyID string
	keys  map[string]ed25519.PublicKey
}

// NewSigner signs with primary; extra public keys (e.g. the previous key
// during rotation) are only announced.
func NewSigner(primary ed25519.PrivateKey, extra ...ed25519.PublicKey) (*Signer, error) {
	if len(primary) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing: primary key has %d bytes, want an Ed25519 private key of %d", len(primary), ed25519.PrivateKeySize)
	}
	priv := slices.Clone(primary)
	pub := slices.Clone(priv.Public().(ed25519.PublicKey))
	s := &Signer{priv: priv, pub: pub, keyID: KeyID(pub), keys: map[string]ed25519.PublicKey{}}
	s.keys[s.keyID] = pub
	for i, k := range extra {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signing: extra key %d has %d bytes, want an Ed25519 public key of %d", i, len(k), ed25519.PublicKeySize)
		}
		k = slices.Clone(k)
		s.keys[KeyID(k)] = k
	}
	return s, nil
}

// Sign sets c.KeyID to the primary key id and c.Signature to the base64
// (standard encoding) Ed25519 signature of CanonicalBytes. On error c is
// left unchanged.
func (s *Signer) Sign(c *protocol.Command) error {
	cp := *c
	cp.KeyID = s.keyID
	cp.Signature = ""
	msg, err := CanonicalBytes(cp)
	if err != nil {
		return err
	}
	c.KeyID = s.keyID
	c.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(s.priv, msg))
	return nil
}

// KeyID returns the primary key id.
func (s *Signer) KeyID() string { return s.keyID }

// PublicKey returns the primary public key.
func (s *Signer) PublicKey() ed25519.PublicKey { return slices.Clone(s.pub) }

// PublicKeys returns the primary and the extra public keys by key id.
func (s *Signer) PublicKeys() map[string]ed25519.PublicKey {
	out := make(map[string]ed25519.PublicKey, len(s.keys))
	for id, k := range s.keys {
		out[id] = slices.Clone(k)
	}
	return out
}

// EncodePublicKey returns the base64 (standard encoding) of the 32 raw key
// bytes: the format of WELCOME's signing_public_key.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// DecodePublicKey parses the format of EncodePublicKey.
func DecodePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("signing: public key is not base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("signing: public key has %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Verifier checks COMMAND signatures against a fixed set of trusted keys. It
// is safe for concurrent use.
type Verifier struct {
	keys map[string]ed25519.PublicKey
}

// NewVerifier trusts keys, by key id (normally KeyID of the key). The map is
// copied; keys that are not 32 bytes long are ignored.
func NewVerifier(keys map[string]ed25519.PublicKey) *Verifier {
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for id, k := range keys {
		if len(k) == ed25519.PublicKeySize {
			v.keys[id] = slices.Clone(k)
		}
	}
	return v
}

// Verify checks c.Signature with the trusted key named by c.KeyID. The error
// wraps ErrUnknownKey, ErrMalformedSignature or ErrBadSignature.
func (v *Verifier) Verify(c protocol.Command) error {
	if c.KeyID == "" {
		return fmt.Errorf("%w: the command has no key_id", ErrUnknownKey)
	}
	pub, ok := v.keys[c.KeyID]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownKey, truncate(c.KeyID, 64))
	}
	if c.Signature == "" {
		return fmt.Errorf("%w: the command is not signed", ErrMalformedSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil {
		return fmt.Errorf("%w: not base64: %v", ErrMalformedSignature, err)
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrMalformedSignature, len(sig), ed25519.SignatureSize)
	}
	msg, err := CanonicalBytes(c)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		return ErrBadSignature
	}
	return nil
}
