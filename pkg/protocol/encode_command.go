package protocol

import (
	"encoding/json"
	"fmt"
)

// CommandFrames encodes the COMMAND frames of one command's executions byte
// for byte as Encode(TypeCommand, executionID, Command) does, without
// reflection: the fields the executions share are encoded once, and each
// frame only splices in execution_id (also the envelope's id), agent_id,
// nonce and signature. It is safe for concurrent use.
type CommandFrames struct {
	head []byte // `,"payload":{"command_id":<command_id>,"execution_id":`
	mid  []byte // `,"verb":<verb>,"args":<args>,...,"expires_at":<expires_at>,"nonce":`
	tail []byte // `,"key_id":<key_id>,"signature":`
}

// NewCommandFrames encodes c's shared fields (c.ExecutionID, c.AgentID,
// c.Nonce and c.Signature are ignored). Its errors are those Encode gives for
// the same fields (args that are not JSON, a time outside years 0-9999).
func NewCommandFrames(c Command) (*CommandFrames, error) {
	var f CommandFrames
	var err error
	field := func(dst []byte, name string, v any) []byte {
		if err != nil {
			return dst
		}
		var b []byte
		if b, err = json.Marshal(v); err != nil {
			err = fmt.Errorf("encoding %s payload: %s: %w", TypeCommand, name, err)
			return dst
		}
		return append(dst, b...)
	}
	f.head = field([]byte(`,"payload":{"command_id":`), "command_id", c.CommandID)
	f.head = append(f.head, `,"execution_id":`...)
	f.mid = field(append(f.mid, `,"verb":`...), "verb", c.Verb)
	f.mid = field(append(f.mid, `,"args":`...), "args", c.Args)
	f.mid = field(append(f.mid, `,"requested_by":`...), "requested_by", c.RequestedBy)
	f.mid = field(append(f.mid, `,"issued_at":`...), "issued_at", c.IssuedAt)
	f.mid = field(append(f.mid, `,"expires_at":`...), "expires_at", c.ExpiresAt)
	f.mid = append(f.mid, `,"nonce":`...)
	f.tail = field([]byte(`,"key_id":`), "key_id", c.KeyID)
	f.tail = append(f.tail, `,"signature":`...)
	if err != nil {
		return nil, err
	}
	return &f, nil
}

// Encode returns the COMMAND frame of the execution executionID.
func (f *CommandFrames) Encode(executionID, agentID, nonce, signature string) []byte {
	out := make([]byte, 0, len(f.head)+len(f.mid)+len(f.tail)+2*len(executionID)+len(agentID)+len(nonce)+len(signature)+64)
	out = append(out, `{"type":"COMMAND"`...)
	if executionID != "" { // the envelope's id is omitempty
		out = appendJSONString(append(out, `,"id":`...), executionID)
	}
	out = append(out, f.head...)
	out = appendJSONString(out, executionID)
	out = appendJSONString(append(out, `,"agent_id":`...), agentID)
	out = append(out, f.mid...)
	out = appendJSONString(out, nonce)
	out = append(out, f.tail...)
	out = appendJSONString(out, signature)
	return append(out, "}}"...)
}

// appendJSONString appends v as json.Marshal encodes a string: printable
// ASCII that needs no escaping (none of '"', '\\', '<', '>', '&') directly,
// anything else through json.Marshal.
func appendJSONString(dst []byte, v string) []byte {
	plain := true
	for i := 0; i < len(v) && plain; i++ {
		c := v[i]
		plain = c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	if plain {
		dst = append(dst, '"')
		dst = append(dst, v...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(v) // a string always encodes
	return append(dst, b...)
}
