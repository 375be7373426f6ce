package signing

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"unicode/utf8"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// Prepared signs the COMMANDs of one command's executions: the canonical bytes
// of the fields they share (everything but execution_id, agent_id and nonce)
// are built once, and each Sign only splices in its three fields. Its
// signatures are byte for byte those of Signer.Sign. It is safe for
// concurrent use.
type Prepared struct {
	priv ed25519.PrivateKey
	head []byte // `["viworks.command.v1",<command_id>,`
	mid  []byte // `,<verb>,<args>,<requested_by>,<issued_at>,<expires_at>,`
	tail []byte // `,<key_id>]`
}

// Prepare canonicalises c's shared fields (c.ExecutionID, c.AgentID, c.Nonce,
// c.KeyID and c.Signature are ignored; the key id is the primary's). Its
// errors are those CanonicalBytes gives for the same fields.
func (s *Signer) Prepare(c protocol.Command) (*Prepared, error) {
	args, err := CanonicalArgs(c.Args)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := newStringEncoder(&buf)
	write := func(name, v string) error {
		if !utf8.ValidString(v) {
			return fmt.Errorf("signing: %s is not valid UTF-8", name)
		}
		return enc.write(v)
	}
	cut := func() []byte {
		b := bytes.Clone(buf.Bytes())
		buf.Reset()
		return b
	}
	p := &Prepared{priv: s.priv}
	buf.WriteByte('[')
	if err := write("domain", Domain); err != nil {
		return nil, err
	}
	buf.WriteByte(',')
	if err := write("command_id", c.CommandID); err != nil {
		return nil, err
	}
	buf.WriteByte(',')
	p.head = cut()
	buf.WriteByte(',')
	if err := write("verb", c.Verb); err != nil {
		return nil, err
	}
	buf.WriteByte(',')
	buf.Write(args)
	for _, f := range []struct{ name, v string }{
		{"requested_by", c.RequestedBy}, {"issued_at", formatTime(c.IssuedAt)}, {"expires_at", formatTime(c.ExpiresAt)},
	} {
		buf.WriteByte(',')
		if err := write(f.name, f.v); err != nil {
			return nil, err
		}
	}
	buf.WriteByte(',')
	p.mid = cut()
	buf.WriteByte(',')
	if err := write("key_id", s.keyID); err != nil {
		return nil, err
	}
	buf.WriteByte(']')
	p.tail = cut()
	return p, nil
}

// AppendCanonical appends to dst the CanonicalBytes of the prepared command
// with executionID, agentID and nonce (and the primary key id).
func (p *Prepared) AppendCanonical(dst []byte, executionID, agentID, nonce string) ([]byte, error) {
	dst = append(dst, p.head...)
	dst, err := appendCanonicalString(dst, "execution_id", executionID)
	if err != nil {
		return nil, err
	}
	dst = append(dst, ',')
	if dst, err = appendCanonicalString(dst, "agent_id", agentID); err != nil {
		return nil, err
	}
	dst = append(dst, p.mid...)
	if dst, err = appendCanonicalString(dst, "nonce", nonce); err != nil {
		return nil, err
	}
	return append(dst, p.tail...), nil
}

// Sign returns the signature (standard base64) Signer.Sign sets on the
// prepared command with executionID, agentID and nonce.
func (p *Prepared) Sign(executionID, agentID, nonce string) (string, error) {
	var scratch [512]byte
	msg, err := p.AppendCanonical(scratch[:0], executionID, agentID, nonce)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(ed25519.Sign(p.priv, msg)), nil
}

// appendCanonicalString appends v as the canonical form writes strings: plain
// printable ASCII directly, anything else through the string encoder.
func appendCanonicalString(dst []byte, name, v string) ([]byte, error) {
	if plainASCII(v) {
		dst = append(dst, '"')
		dst = append(dst, v...)
		return append(dst, '"'), nil
	}
	if !utf8.ValidString(v) {
		return nil, fmt.Errorf("signing: %s is not valid UTF-8", name)
	}
	var buf bytes.Buffer
	if err := newStringEncoder(&buf).write(v); err != nil {
		return nil, err
	}
	return append(dst, buf.Bytes()...), nil
}

// plainASCII reports whether v is printable ASCII without '"' or '\\': a JSON
// string that needs no escaping.
func plainASCII(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
