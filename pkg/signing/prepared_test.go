package signing

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// equivalentCommands are commands the prepared path must sign and encode
// exactly as Signer.Sign and protocol.Encode do.
func equivalentCommands() []protocol.Command {
	base := sampleCommand()
	with := func(f func(c *protocol.Command)) protocol.Command {
		c := base
		f(&c)
		return c
	}
	big := `{"blob":"` + strings.Repeat("x", 200_000) + `","list":[` + strings.Repeat(`{"k":"ü<&>","n":1.0e3},`, 500) + `null]}`
	return []protocol.Command{
		vectorCommand(),
		base,
		with(func(c *protocol.Command) { c.Args = nil }),
		with(func(c *protocol.Command) { c.Args = json.RawMessage(`null`) }),
		with(func(c *protocol.Command) { c.Args = json.RawMessage(" \n{ } ") }),
		with(func(c *protocol.Command) {
			c.Args = json.RawMessage(`{"b":[1,2,{"z":null,"y":"<&>"}],"a":"\u2028\t\u0000"}`)
		}),
		with(func(c *protocol.Command) { c.Args = json.RawMessage(big) }),
		with(func(c *protocol.Command) {
			c.AgentID, c.ExecutionID, c.Nonce = "sérveur-01", "exec <&> \"1\"", `n\x`
			c.RequestedBy, c.Verb, c.CommandID = "Zoë 🚀 <ops@example.com>", "run\u2028", "c\x01"
		}),
		with(func(c *protocol.Command) { c.ExecutionID = "" }), // the envelope's id is omitted
		with(func(c *protocol.Command) {
			c.IssuedAt = time.Date(2030, 2, 3, 4, 5, 6, 7, time.FixedZone("X", -7*3600-30*60))
			c.ExpiresAt = time.Time{}
		}),
	}
}

// The prepared path's canonical bytes, signature and COMMAND frame are those
// of CanonicalBytes, Signer.Sign and protocol.Encode, for varied commands.
func TestPreparedMatchesSignAndEncode(t *testing.T) {
	signer := newSigner(t, vectorKey(t))
	for i, c := range equivalentCommands() {
		requireEquivalent(t, signer, c, "command %d", i)
	}
}

// The docs/protocol.md test vector comes out of the prepared path unchanged.
func TestPreparedTestVector(t *testing.T) {
	signer := newSigner(t, vectorKey(t))
	c := vectorCommand()
	p, err := signer.Prepare(c)
	require.NoError(t, err)
	msg, err := p.AppendCanonical(nil, c.ExecutionID, c.AgentID, c.Nonce)
	require.NoError(t, err)
	require.Equal(t, vectorCanonical, string(msg))
	sig, err := p.Sign(c.ExecutionID, c.AgentID, c.Nonce)
	require.NoError(t, err)
	require.Equal(t, vectorSignature, sig)
	c.KeyID = signer.KeyID()
	frames, err := protocol.NewCommandFrames(c)
	require.NoError(t, err)
	// The scheduler's frames carry the execution id as the envelope's id.
	want := strings.Replace(vectorFrame, `{"type":"COMMAND",`, `{"type":"COMMAND","id":"exec-42-1",`, 1)
	require.Equal(t, want, string(frames.Encode(c.ExecutionID, c.AgentID, c.Nonce, sig)))
}

// requireEquivalent checks the prepared path against the reference one on c:
// both fail, or both give the same bytes.
func requireEquivalent(t *testing.T, signer *Signer, c protocol.Command, msgAndArgs ...any) {
	t.Helper()
	c.KeyID, c.Signature = signer.KeyID(), ""
	want, wantErr := CanonicalBytes(c)
	p, err := signer.Prepare(c)
	var got []byte
	if err == nil {
		got, err = p.AppendCanonical([]byte("scratch"), c.ExecutionID, c.AgentID, c.Nonce)
	}
	if wantErr != nil {
		require.Error(t, err, msgAndArgs...)
		return
	}
	require.NoError(t, err, msgAndArgs...)
	require.Equal(t, "scratch"+string(want), string(got), msgAndArgs...)

	ref := c
	require.NoError(t, signer.Sign(&ref), msgAndArgs...)
	sig, err := p.Sign(c.ExecutionID, c.AgentID, c.Nonce)
	require.NoError(t, err, msgAndArgs...)
	require.Equal(t, ref.Signature, sig, msgAndArgs...)

	wantFrame, wantErr := protocol.Encode(protocol.TypeCommand, c.ExecutionID, ref)
	frames, err := protocol.NewCommandFrames(c)
	if wantErr != nil {
		require.Error(t, err, msgAndArgs...)
		return
	}
	require.NoError(t, err, msgAndArgs...)
	require.Equal(t, string(wantFrame), string(frames.Encode(c.ExecutionID, c.AgentID, c.Nonce, sig)), msgAndArgs...)
}

// FuzzPreparedEquivalence: for any command, the prepared path fails exactly
// when the reference one does, and otherwise gives the same canonical bytes,
// signature and COMMAND frame.
func FuzzPreparedEquivalence(f *testing.F) {
	f.Add(vectorArgs, "cmd-42", "exec-42-1", "web-01", "create_panel_user", "ops@example.com", "Zm9vYmFyYmF6cXV4MTIzNA", int64(0), int32(0))
	for _, args := range []string{``, `null`, `{}`, `[]`, `{"b":1,"a":2}`, `{"a":{"c":[1,2,{"z":null,"y":"<&>"}]}}`,
		`{"\uff61":1,"\ud83d\ude00":2}`, `{"a":1,"a":2}`, `{"n":-0.0e+00}`, `"\u2028"`, `{`, "{\"a\":\"\xff\"}", `1e999`, " {\n} "} {
		f.Add(args, "c", "e", "a", "v", "r", "n", int64(1), int32(3600))
	}
	f.Add(`{}`, `x","y`, `\`, "\"", "\u2028", "<>&", "\x00", int64(-1), int32(-45))
	f.Add(`{}`, "c", "\xff", "a", "v", "r", "n", int64(2), int32(60))
	f.Add(`{}`, "c", "", "a\u00e9", "v", "r", "n\u2029", int64(1e18), int32(7))
	signer := newSigner(f, vectorKey(f))
	f.Fuzz(func(t *testing.T, args, commandID, executionID, agentID, verb, requestedBy, nonce string, nanos int64, offsetS int32) {
		at := time.Unix(0, nanos).In(time.FixedZone("", int(offsetS%(18*3600))))
		requireEquivalent(t, signer, protocol.Command{
			CommandID: commandID, ExecutionID: executionID, AgentID: agentID, Verb: verb,
			Args: json.RawMessage(args), RequestedBy: requestedBy,
			IssuedAt: at, ExpiresAt: at.Add(time.Minute), Nonce: nonce,
		})
	})
}

// BenchmarkSign compares signing one execution of a command from scratch
// (Signer.Sign and protocol.Encode) with the prepared path.
func BenchmarkSign(b *testing.B) {
	signer := newSigner(b, vectorKey(b))
	c := sampleCommand()
	c.Args = json.RawMessage(`{"message":"hello fleet","user":{"name":"alice","groups":["admin","ops"]}}`)
	b.Run("reference", func(b *testing.B) {
		for b.Loop() {
			cp := c
			if err := signer.Sign(&cp); err != nil {
				b.Fatal(err)
			}
			if _, err := protocol.Encode(protocol.TypeCommand, cp.ExecutionID, cp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("prepared", func(b *testing.B) {
		cp := c
		cp.KeyID = signer.KeyID()
		p, err := signer.Prepare(cp)
		require.NoError(b, err)
		frames, err := protocol.NewCommandFrames(cp)
		require.NoError(b, err)
		for b.Loop() {
			sig, err := p.Sign(c.ExecutionID, c.AgentID, c.Nonce)
			if err != nil {
				b.Fatal(err)
			}
			_ = frames.Encode(c.ExecutionID, c.AgentID, c.Nonce, sig)
		}
	})
}
