package signing

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// The test vector of docs/protocol.md. Keep both in step: agents written in
// other languages check their implementation against it.
const (
	vectorSeedHex   = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	vectorPublicB64 = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	vectorKeyID     = "ed25519:21fe31dfa154a261"
	vectorArgs      = `{ "username": "alice", "groups": ["admin", "ops"], "quota": 12345678901234567890, "ratio": 1.50, "note": "<b>&\"x\"</b>\n", "ü": true, "a": null }`
	vectorCanonical = `["viworks.command.v1","cmd-42","exec-42-1","web-01","create_panel_user",` +
		`{"a":null,"groups":["admin","ops"],"note":"<b>&\"x\"</b>\n","quota":12345678901234567890,"ratio":1.50,"username":"alice","ü":true},` +
		`"ops@example.com","2025-01-02T03:04:05.5Z","2025-01-02T03:09:05Z","Zm9vYmFyYmF6cXV4MTIzNA","ed25519:21fe31dfa154a261"]`
	vectorSignature = "+ixX+Kc9bdBU751r3PDG7d/pVMEFW+SHJBYHBe+3d/CTaQNfsXU5oEqedKx2MaT1bSm6FAy2yjn2/G6ZL68YBQ=="
	// The COMMAND frame as protocol.Encode puts it on the wire: args
	// compacted in their original key order, <, > and & escaped, issued_at in
	// its original zone. It verifies all the same.
	vectorFrame = `{"type":"COMMAND","payload":{"command_id":"cmd-42","execution_id":"exec-42-1","agent_id":"web-01",` +
		`"verb":"create_panel_user","args":{"username":"alice","groups":["admin","ops"],"quota":12345678901234567890,` +
		`"ratio":1.50,"note":"\u003cb\u003e\u0026\"x\"\u003c/b\u003e\n","ü":true,"a":null},"requested_by":"ops@example.com",` +
		`"issued_at":"2025-01-02T05:04:05.5+02:00","expires_at":"2025-01-02T03:09:05Z","nonce":"Zm9vYmFyYmF6cXV4MTIzNA",` +
		`"key_id":"ed25519:21fe31dfa154a261","signature":"+ixX+Kc9bdBU751r3PDG7d/pVMEFW+SHJBYHBe+3d/CTaQNfsXU5oEqedKx2MaT1bSm6FAy2yjn2/G6ZL68YBQ=="}}`
)

func vectorKey(t testing.TB) ed25519.PrivateKey {
	seed, err := hex.DecodeString(vectorSeedHex)
	require.NoError(t, err)
	return ed25519.NewKeyFromSeed(seed)
}

func vectorCommand() protocol.Command {
	return protocol.Command{
		CommandID:   "cmd-42",
		ExecutionID: "exec-42-1",
		AgentID:     "web-01",
		Verb:        "create_panel_user",
		Args:        json.RawMessage(vectorArgs),
		RequestedBy: "ops@example.com",
		// 05:04:05.5 at UTC+2 is 03:04:05.5Z: times are signed in UTC.
		IssuedAt:  time.Date(2025, 1, 2, 5, 4, 5, 500_000_000, time.FixedZone("", 2*3600)),
		ExpiresAt: time.Date(2025, 1, 2, 3, 9, 5, 0, time.UTC),
		Nonce:     "Zm9vYmFyYmF6cXV4MTIzNA",
	}
}

func newKey(t testing.TB) ed25519.PrivateKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return priv
}

func newSigner(t testing.TB, priv ed25519.PrivateKey, extra ...ed25519.PublicKey) *Signer {
	s, err := NewSigner(priv, extra...)
	require.NoError(t, err)
	return s
}

func sampleCommand() protocol.Command {
	now := time.Date(2025, 6, 1, 12, 0, 0, 123_456_789, time.UTC)
	return protocol.Command{
		CommandID: "c-1", ExecutionID: "e-1", AgentID: "agent-1", Verb: "echo",
		Args: json.RawMessage(`{"message":"hi","n":1}`), RequestedBy: "alice",
		IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute), Nonce: "n-1",
	}
}

func TestTestVector(t *testing.T) {
	s := newSigner(t, vectorKey(t))
	require.Equal(t, vectorKeyID, s.KeyID())
	require.Equal(t, vectorPublicB64, EncodePublicKey(s.PublicKey()))

	c := vectorCommand()
	require.NoError(t, s.Sign(&c))
	require.Equal(t, vectorKeyID, c.KeyID)
	got, err := CanonicalBytes(c)
	require.NoError(t, err)
	require.Equal(t, vectorCanonical, string(got))
	require.Len(t, got, 322)
	sum := sha256.Sum256(got)
	require.Equal(t, "1dcd0bccda90fc252c41673bd4391cc34cc10ccef0dcc9d3d6c9226fa2189176", hex.EncodeToString(sum[:]))
	require.Equal(t, vectorSignature, c.Signature)

	pub, err := DecodePublicKey(vectorPublicB64)
	require.NoError(t, err)
	require.NoError(t, NewVerifier(map[string]ed25519.PublicKey{vectorKeyID: pub}).Verify(c))
	sig, err := base64.StdEncoding.DecodeString(vectorSignature)
	require.NoError(t, err)
	require.True(t, ed25519.Verify(pub, []byte(vectorCanonical), sig))

	frame, err := protocol.Encode(protocol.TypeCommand, "", c)
	require.NoError(t, err)
	require.Equal(t, vectorFrame, string(frame))
	f, err := protocol.DecodeServerFrame([]byte(vectorFrame))
	require.NoError(t, err)
	wire := *f.Payload.(*protocol.Command)
	fromWire, err := CanonicalBytes(wire)
	require.NoError(t, err)
	require.Equal(t, vectorCanonical, string(fromWire))
	require.NoError(t, NewVerifier(map[string]ed25519.PublicKey{vectorKeyID: pub}).Verify(wire))
}

func TestKeyID(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	id := KeyID(k1.Public().(ed25519.PublicKey))
	require.Regexp(t, regexp.MustCompile(`^ed25519:[0-9a-f]{16}$`), id)
	require.Equal(t, id, KeyID(k1.Public().(ed25519.PublicKey)))
	require.NotEqual(t, id, KeyID(k2.Public().(ed25519.PublicKey)))
}

func TestSignVerifyRoundTripThroughTheWire(t *testing.T) {
	s := newSigner(t, newKey(t))
	v := NewVerifier(s.PublicKeys())
	c := sampleCommand()
	c.IssuedAt = c.IssuedAt.In(time.FixedZone("CEST", 2*3600))
	c.Args = json.RawMessage(`{ "message" : "<script>&amp;</script>", "big": 123456789012345678901234567890, "f": 1.10 }`)
	require.NoError(t, s.Sign(&c))
	require.Equal(t, s.KeyID(), c.KeyID)
	require.NoError(t, v.Verify(c))

	// protocol.Encode compacts the args and escapes <, > and & as \u003c...;
	// the frame decoded on the agent still verifies.
	frame, err := protocol.Encode(protocol.TypeCommand, "", c)
	require.NoError(t, err)
	require.Contains(t, string(frame), `\u003cscript\u003e`)
	f, err := protocol.DecodeServerFrame(frame)
	require.NoError(t, err)
	got := *f.Payload.(*protocol.Command)
	require.NotEqual(t, string(c.Args), string(got.Args))
	require.NoError(t, v.Verify(got))
}

func TestEveryFieldTamperedBreaksVerification(t *testing.T) {
	s := newSigner(t, newKey(t))
	// The verifier also knows the signer's key under a second id, so a
	// changed key_id reaches the signature check instead of failing lookup.
	keys := s.PublicKeys()
	keys["ed25519:0000000000000000"] = s.PublicKey()
	v := NewVerifier(keys)

	cases := []struct {
		field  string
		tamper func(*protocol.Command)
	}{
		{"command_id", func(c *protocol.Command) { c.CommandID = "c-2" }},
		{"execution_id", func(c *protocol.Command) { c.ExecutionID = "e-2" }},
		{"agent_id", func(c *protocol.Command) { c.AgentID = "agent-2" }},
		{"verb", func(c *protocol.Command) { c.Verb = "reboot" }},
		{"args", func(c *protocol.Command) { c.Args = json.RawMessage(`{"message":"hi","n":2}`) }},
		{"requested_by", func(c *protocol.Command) { c.RequestedBy = "mallory" }},
		{"issued_at", func(c *protocol.Command) { c.IssuedAt = c.IssuedAt.Add(time.Nanosecond) }},
		{"expires_at", func(c *protocol.Command) { c.ExpiresAt = c.ExpiresAt.Add(time.Hour) }},
		{"nonce", func(c *protocol.Command) { c.Nonce = "n-2" }},
		{"key_id", func(c *protocol.Command) { c.KeyID = "ed25519:0000000000000000" }},
	}
	require.Len(t, cases, 10, "every signed field of the COMMAND")
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			c := sampleCommand()
			require.NoError(t, s.Sign(&c))
			require.NoError(t, v.Verify(c))
			tc.tamper(&c)
			err := v.Verify(c)
			require.ErrorIs(t, err, ErrBadSignature)
			require.NotErrorIs(t, err, ErrUnknownKey)
		})
	}
}

// Field boundaries are unambiguous: moving characters from one field to the
// next changes the signed bytes.
func TestFieldsDoNotBleed(t *testing.T) {
	a, b := sampleCommand(), sampleCommand()
	a.CommandID, a.ExecutionID = "ab", "c"
	b.CommandID, b.ExecutionID = "a", "bc"
	ca, err := CanonicalBytes(a)
	require.NoError(t, err)
	cb, err := CanonicalBytes(b)
	require.NoError(t, err)
	require.NotEqual(t, ca, cb)

	a.CommandID, a.ExecutionID = `x","y`, "z"
	b.CommandID, b.ExecutionID = "x", `y","z`
	ca, err = CanonicalBytes(a)
	require.NoError(t, err)
	cb, err = CanonicalBytes(b)
	require.NoError(t, err)
	require.NotEqual(t, ca, cb)
}

func TestArgsEquivalence(t *testing.T) {
	cases := []struct {
		name  string
		a, b  string
		equal bool
	}{
		{"key order and whitespace", `{"b":1, "a":2}`, `{"a":2,"b":1}`, true},
		{"nested key order", `{"o":{"y":[1,{"q":1,"p":2}],"x":null}}`, "{\n\t\"o\": {\"x\": null, \"y\": [1, {\"p\": 2, \"q\": 1}]}\n}", true},
		{"string escapes", `{"a":"\u0041\u003c\/"}`, `{"a":"A</"}`, true},
		{"empty, null and {}", ``, `null`, true},
		{"null and {}", ` null `, `{}`, true},
		{"value changed", `{"b":1, "a":2}`, `{"a":2,"b":2}`, false},
		{"number spelled differently", `{"a":1.0}`, `{"a":1}`, false},
		{"large integers differ beyond float64", `{"a":9007199254740993}`, `{"a":9007199254740992}`, false},
		{"array order", `{"a":[1,2]}`, `{"a":[2,1]}`, false},
		{"type changed", `{"a":"1"}`, `{"a":1}`, false},
		{"key case", `{"a":1}`, `{"A":1}`, false},
		{"nested null vs empty", `{"a":null}`, `{"a":{}}`, false},
	}
	s := newSigner(t, newKey(t))
	v := NewVerifier(s.PublicKeys())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ca, err := CanonicalArgs(json.RawMessage(tc.a))
			require.NoError(t, err)
			cb, err := CanonicalArgs(json.RawMessage(tc.b))
			require.NoError(t, err)
			require.Equal(t, tc.equal, string(ca) == string(cb), "%s vs %s", ca, cb)

			c := sampleCommand()
			c.Args = json.RawMessage(tc.a)
			require.NoError(t, s.Sign(&c))
			c.Args = json.RawMessage(tc.b)
			if tc.equal {
				require.NoError(t, v.Verify(c))
			} else {
				require.ErrorIs(t, v.Verify(c), ErrBadSignature)
			}
		})
	}
}

// The canonical args table of docs/protocol.md.
func TestCanonicalArgs(t *testing.T) {
	cases := []struct{ in, want string }{
		{``, `{}`},
		{`null`, `{}`},
		{` { } `, `{}`},
		{`{"b":1, "a":2}`, `{"a":2,"b":1}`},
		{`{"b":{"d":1,"c":[{"y":1,"x":2}]},"a":true}`, `{"a":true,"b":{"c":[{"x":2,"y":1}],"d":1}}`},
		{`{"n": 12345678901234567890123, "f": 1.50, "e": 1E+2, "z": -0}`, `{"e":1E+2,"f":1.50,"n":12345678901234567890123,"z":-0}`},
		{`{"h": "<a href=\"x\">&</a>"}`, `{"h":"<a href=\"x\">&</a>"}`},
		{`{"h": "\u003c\u0026\u003e"}`, `{"h":"<&>"}`},
		{`{"s": "\u00e9\n\t\b\f\r\u0001\u007f\/\u2028"}`, "{\"s\":\"é\\n\\t\\b\\f\\r\\u0001\x7f/\\u2028\"}"},
		{`{"\uff61":1, "\ud83d\ude00":2, "é":3, "a":4, "":5}`, `{"":5,"a":4,"é":3,"😀":2,"｡":1}`},
		{`[3, {"b":1,"a":2}]`, `[3,{"a":2,"b":1}]`},
		{`"text"`, `"text"`},
	}
	for _, tc := range cases {
		got, err := CanonicalArgs(json.RawMessage(tc.in))
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, string(got), tc.in)
		again, err := CanonicalArgs(got)
		require.NoError(t, err)
		require.Equal(t, string(got), string(again), "canonical args are stable")
	}
}

func TestCanonicalErrors(t *testing.T) {
	for name, args := range map[string]string{
		"truncated":        `{"a":`,
		"trailing garbage": `{"a":1}x`,
		"two values":       `{"a":1} {"b":2}`,
		"duplicate key":    `{"a":1,"a":2}`,
		"escaped dup key":  `{"a":1,"\u0061":2}`,
		"nested dup key":   `{"o":{"k":1,"k":1}}`,
		"invalid utf-8":    "{\"a\":\"\xff\"}",
		"single quotes":    `{'a':1}`,
		"bare word":        `nul`,
		"form feed around": "\f{}",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := CanonicalArgs(json.RawMessage(args))
			require.Error(t, err)
			c := sampleCommand()
			c.Args = json.RawMessage(args)
			_, err = CanonicalBytes(c)
			require.Error(t, err)
			s := newSigner(t, newKey(t))
			before := c
			require.Error(t, s.Sign(&c))
			require.Equal(t, before, c, "Sign leaves the command unchanged on error")
			c.KeyID, c.Signature = s.KeyID(), base64.StdEncoding.EncodeToString(make([]byte, 64))
			require.ErrorIs(t, NewVerifier(s.PublicKeys()).Verify(c), ErrBadSignature)
		})
	}
	c := sampleCommand()
	c.RequestedBy = "bad\xffutf8"
	_, err := CanonicalBytes(c)
	require.ErrorContains(t, err, "requested_by is not valid UTF-8")
}

func TestTimesAreUTCWithTrimmedNanoseconds(t *testing.T) {
	c := sampleCommand()
	c.IssuedAt = time.Date(2025, 1, 2, 3, 4, 5, 120_000_000, time.FixedZone("", -5*3600))
	c.ExpiresAt = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := CanonicalBytes(c)
	require.NoError(t, err)
	require.Contains(t, string(b), `"2025-01-02T08:04:05.12Z","2025-01-02T03:04:05Z"`)
}

func TestLargeIntegersKeptExactly(t *testing.T) {
	s := newSigner(t, newKey(t))
	v := NewVerifier(s.PublicKeys())
	c := sampleCommand()
	c.Args = json.RawMessage(`{"id":9007199254740993,"huge":123456789012345678901234567890e-5}`)
	require.NoError(t, s.Sign(&c))
	b, err := CanonicalBytes(c)
	require.NoError(t, err)
	require.Contains(t, string(b), `{"huge":123456789012345678901234567890e-5,"id":9007199254740993}`)

	frame, err := protocol.Encode(protocol.TypeCommand, "", c)
	require.NoError(t, err)
	f, err := protocol.DecodeServerFrame(frame)
	require.NoError(t, err)
	require.NoError(t, v.Verify(*f.Payload.(*protocol.Command)))

	c.Args = json.RawMessage(`{"id":9007199254740992,"huge":123456789012345678901234567890e-5}`)
	require.ErrorIs(t, v.Verify(c), ErrBadSignature)
}

func TestHTMLCharactersInStrings(t *testing.T) {
	s := newSigner(t, newKey(t))
	v := NewVerifier(s.PublicKeys())
	c := sampleCommand()
	c.RequestedBy = "<ops & co>"
	c.Args = json.RawMessage(`{"html":"<b>a & b</b>"}`)
	require.NoError(t, s.Sign(&c))
	b, err := CanonicalBytes(c)
	require.NoError(t, err)
	require.Contains(t, string(b), `{"html":"<b>a & b</b>"}`)
	require.Contains(t, string(b), `"<ops & co>"`)
	require.NotContains(t, string(b), `\u003c`)

	c.Args = json.RawMessage(`{"html":"\u003cb\u003ea \u0026 b\u003c/b\u003e"}`)
	require.NoError(t, v.Verify(c), "the same string escaped differently")
	c.Args = json.RawMessage(`{"html":"<b>a &amp; b</b>"}`)
	require.ErrorIs(t, v.Verify(c), ErrBadSignature)
}

func TestRotation(t *testing.T) {
	oldKey, newKeyPriv := newKey(t), newKey(t)
	oldSigner := newSigner(t, oldKey)
	newSignerWithOld := newSigner(t, newKeyPriv, oldSigner.PublicKey())

	announced := newSignerWithOld.PublicKeys()
	require.Len(t, announced, 2)
	require.Equal(t, oldSigner.PublicKey(), announced[oldSigner.KeyID()])
	require.Equal(t, newSignerWithOld.PublicKey(), announced[newSignerWithOld.KeyID()])
	require.NotEqual(t, oldSigner.KeyID(), newSignerWithOld.KeyID())

	signedOld, signedNew := sampleCommand(), sampleCommand()
	require.NoError(t, oldSigner.Sign(&signedOld))
	require.NoError(t, newSignerWithOld.Sign(&signedNew))
	require.Equal(t, newSignerWithOld.KeyID(), signedNew.KeyID, "the primary signs")

	both := NewVerifier(announced)
	require.NoError(t, both.Verify(signedOld))
	require.NoError(t, both.Verify(signedNew))

	onlyOld := NewVerifier(oldSigner.PublicKeys())
	require.NoError(t, onlyOld.Verify(signedOld))
	require.ErrorIs(t, onlyOld.Verify(signedNew), ErrUnknownKey)
}

func TestVerifyErrors(t *testing.T) {
	s := newSigner(t, newKey(t))
	other := newSigner(t, newKey(t))
	v := NewVerifier(s.PublicKeys())
	signed := sampleCommand()
	require.NoError(t, s.Sign(&signed))

	cases := []struct {
		name string
		mut  func(*protocol.Command)
		want error
	}{
		{"no key id", func(c *protocol.Command) { c.KeyID = "" }, ErrUnknownKey},
		{"unknown key id", func(c *protocol.Command) { c.KeyID = other.KeyID() }, ErrUnknownKey},
		{"no signature", func(c *protocol.Command) { c.Signature = "" }, ErrMalformedSignature},
		{"not base64", func(c *protocol.Command) { c.Signature = "!!not base64!!" }, ErrMalformedSignature},
		{"url-safe base64", func(c *protocol.Command) {
			c.Signature = strings.NewReplacer("+", "-", "/", "_").Replace(c.Signature) + "-_"
		}, ErrMalformedSignature},
		{"short signature", func(c *protocol.Command) { c.Signature = base64.StdEncoding.EncodeToString(make([]byte, 63)) }, ErrMalformedSignature},
		{"zero signature", func(c *protocol.Command) { c.Signature = base64.StdEncoding.EncodeToString(make([]byte, 64)) }, ErrBadSignature},
		{"signed by another key under our id", func(c *protocol.Command) {
			_ = other.Sign(c)
			c.KeyID = s.KeyID()
		}, ErrBadSignature},
	}
	sentinels := []error{ErrUnknownKey, ErrMalformedSignature, ErrBadSignature}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := signed
			tc.mut(&c)
			err := v.Verify(c)
			require.ErrorIs(t, err, tc.want)
			for _, s := range sentinels {
				if s != tc.want {
					require.NotErrorIs(t, err, s, "errors are distinct")
				}
			}
		})
	}
	require.NoError(t, v.Verify(signed))
}

func TestNewSignerErrors(t *testing.T) {
	_, err := NewSigner(nil)
	require.ErrorContains(t, err, "want an Ed25519 private key")
	_, err = NewSigner(newKey(t), ed25519.PublicKey{1, 2, 3})
	require.ErrorContains(t, err, "extra key 0 has 3 bytes")

	// Keys handed out are copies.
	s := newSigner(t, newKey(t))
	pub := s.PublicKey()
	pub[0] ^= 0xff
	require.NotEqual(t, pub, s.PublicKey())
	for _, k := range s.PublicKeys() {
		k[0] ^= 0xff
	}
	c := sampleCommand()
	require.NoError(t, s.Sign(&c))
	require.NoError(t, NewVerifier(s.PublicKeys()).Verify(c))
}

func TestEncodeDecodePublicKey(t *testing.T) {
	pub := newKey(t).Public().(ed25519.PublicKey)
	got, err := DecodePublicKey(EncodePublicKey(pub))
	require.NoError(t, err)
	require.Equal(t, pub, got)
	_, err = DecodePublicKey("***")
	require.ErrorContains(t, err, "not base64")
	_, err = DecodePublicKey(base64.StdEncoding.EncodeToString(make([]byte, 31)))
	require.ErrorContains(t, err, "has 31 bytes, want 32")
}

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, data, mode))
	require.NoError(t, os.Chmod(path, mode)) // regardless of the umask
	return path
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestGenerateAndLoadKeyFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.pem")
	priv, err := GenerateKeyFile(path)
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	if runtime.GOOS != "windows" {
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	}
	loaded, err := LoadPrivateKey(path)
	require.NoError(t, err)
	require.Equal(t, priv, loaded)

	_, err = GenerateKeyFile(path)
	require.ErrorIs(t, err, fs.ErrExist, "an existing key is never overwritten")
	again, err := LoadPrivateKey(path)
	require.NoError(t, err)
	require.Equal(t, priv, again)

	// LoadPublicKey: from the private key file, a PKIX PEM and base64.
	pub := priv.Public().(ed25519.PublicKey)
	got, err := LoadPublicKey(path)
	require.NoError(t, err)
	require.Equal(t, pub, got)
	pubPEM, err := EncodePublicKeyPEM(pub)
	require.NoError(t, err)
	require.Contains(t, string(pubPEM), "-----BEGIN PUBLIC KEY-----")
	got, err = LoadPublicKey(writeFile(t, "pub.pem", pubPEM, 0o644))
	require.NoError(t, err)
	require.Equal(t, pub, got)
	got, err = LoadPublicKey(writeFile(t, "pub.b64", []byte(EncodePublicKey(pub)+"\n"), 0o644))
	require.NoError(t, err)
	require.Equal(t, pub, got)
}

func TestLoadPrivateKeyErrors(t *testing.T) {
	priv := newKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	require.NoError(t, err)
	good := pemBytes("PRIVATE KEY", der)
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	require.NoError(t, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	rsaDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	require.NoError(t, err)

	file := func(data []byte, mode os.FileMode) func(t *testing.T) string {
		return func(t *testing.T) string { return writeFile(t, "k.pem", data, mode) }
	}
	type loadCase struct {
		name string
		path func(t *testing.T) string
		want string
	}
	cases := []loadCase{
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope.pem") }, "does not exist"},
		{"garbage", file([]byte("not a key at all"), 0o600), "is not PEM"},
		{"public key block", file(pemBytes("PUBLIC KEY", pubDER), 0o600), `holds a "PUBLIC KEY" PEM block`},
		{"corrupt DER", file(pemBytes("PRIVATE KEY", []byte{1, 2, 3}), 0o600), "is not a valid PKCS#8 key"},
		{"rsa key", file(pemBytes("PRIVATE KEY", rsaDER), 0o600), "holds an RSA key, not Ed25519"},
		{"directory", func(t *testing.T) string { return t.TempDir() }, "not a regular file"},
	}
	if runtime.GOOS != "windows" {
		cases = append(cases,
			loadCase{"world readable", file(good, 0o644), "accessible by group or others (mode 0644); run chmod 600"},
			loadCase{"group readable", file(good, 0o640), "mode 0640"},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadPrivateKey(tc.path(t))
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err = LoadPrivateKey(filepath.Join(t.TempDir(), "nope.pem"))
	require.True(t, errors.Is(err, fs.ErrNotExist))

	got, err := LoadPrivateKey(writeFile(t, "ok.pem", good, 0o600))
	require.NoError(t, err)
	require.Equal(t, priv, got)
	got, err = LoadPrivateKey(writeFile(t, "ro.pem", good, 0o400))
	require.NoError(t, err)
	require.Equal(t, priv, got)
}

func TestLoadPublicKeyErrors(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	rsaPub, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"garbage":      {[]byte("hello"), "neither PEM"},
		"short base64": {[]byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), "neither PEM"},
		"rsa public":   {pemBytes("PUBLIC KEY", rsaPub), "holds an RSA key, not Ed25519"},
		"certificate":  {pemBytes("CERTIFICATE", []byte{1}), `holds a "CERTIFICATE" PEM block`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := LoadPublicKey(writeFile(t, "k", tc.data, 0o644))
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err = LoadPublicKey(filepath.Join(t.TempDir(), "nope"))
	require.ErrorIs(t, err, fs.ErrNotExist)
}

// FuzzCanonicalBytes: canonicalisation never panics, is stable (canonical
// args canonicalise to themselves), and the canonical bytes are a JSON array
// from which every field reads back exactly, so no field bleeds into another.
func FuzzCanonicalBytes(f *testing.F) {
	f.Add(vectorArgs, "cmd-42", "exec-42-1", "web-01", "create_panel_user", "ops@example.com", "Zm9vYmFyYmF6cXV4MTIzNA", int64(0))
	for _, args := range []string{``, `null`, `{}`, `[]`, `{"b":1,"a":2}`, `{"a":{"c":[1,2,{"z":null,"y":"<&>"}]}}`,
		`{"\uff61":1,"\ud83d\ude00":2}`, `{"a":1,"a":2}`, `{"n":-0.0e+00}`, `"\u2028"`, `{`, "{\"a\":\"\xff\"}", `1e999`} {
		f.Add(args, "c", "e", "a", "v", "r", "n", int64(1))
	}
	f.Add(`{}`, `x","y`, `\`, "\"", "\u2028", "<>&", "\x00", int64(-1))
	f.Fuzz(func(t *testing.T, args, commandID, executionID, agentID, verb, requestedBy, nonce string, nanos int64) {
		c := protocol.Command{
			CommandID: commandID, ExecutionID: executionID, AgentID: agentID, Verb: verb,
			Args: json.RawMessage(args), RequestedBy: requestedBy,
			IssuedAt: time.Unix(0, nanos), ExpiresAt: time.Unix(0, nanos).Add(time.Minute), Nonce: nonce, KeyID: "ed25519:00",
		}
		canonArgs, argsErr := CanonicalArgs(c.Args)
		b, err := CanonicalBytes(c)
		if argsErr != nil {
			require.Error(t, err)
			return
		}
		again, err2 := CanonicalArgs(canonArgs)
		require.NoError(t, err2, "canonical args %q must canonicalise", canonArgs)
		require.Equal(t, string(canonArgs), string(again), "canonicalising twice")
		require.True(t, json.Valid(canonArgs))
		if err != nil {
			return // a string field is not valid UTF-8
		}
		c2 := c
		c2.Args = canonArgs
		b2, err := CanonicalBytes(c2)
		require.NoError(t, err)
		require.Equal(t, string(b), string(b2))

		var parts []json.RawMessage
		require.NoError(t, json.Unmarshal(b, &parts), "%s", b)
		require.Len(t, parts, 11)
		require.Equal(t, string(canonArgs), string(parts[5]))
		for i, want := range map[int]string{0: Domain, 1: commandID, 2: executionID, 3: agentID, 4: verb, 6: requestedBy,
			7: c.IssuedAt.UTC().Format(time.RFC3339Nano), 8: c.ExpiresAt.UTC().Format(time.RFC3339Nano), 9: nonce, 10: c.KeyID} {
			var got string
			require.NoError(t, json.Unmarshal(parts[i], &got))
			require.Equal(t, want, got, "field %d", i)
		}
	})
}
