// Package agentspec holds the rules for what an agent may be called and
// claim: the identifier rule and the limits on its site, labels, capabilities
// and output. The agent wire protocol (pkg/protocol), enrollment and the REST
// API apply the same rules from here, so the API needs no wire protocol to
// check an id or a label.
package agentspec

import (
	"fmt"
	"strings"
)

// Limits of an agent's identifiers, attributes and output.
const (
	MaxIDLen         = 128
	MaxShortFieldLen = 256
	MaxCapabilities  = 128
	MaxLabels        = 64
	MaxOutputBytes   = 64 << 10 // what an agent returns of a command's output at most
)

// IDRule describes the identifier rule CheckID applies, for error messages.
const IDRule = "1-128 bytes of A-Z a-z 0-9 . _ : - and not only dots"

// Error is a value that breaks a rule: Field names it ("" for none).
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func invalid(field, reason string) *Error { return &Error{Field: field, Reason: reason} }

// CheckID is the one rule for identifiers (agent, execution and command ids,
// nonces) wherever they enter: the wire, enrollment, certificates and API
// paths. An id is 1..MaxIDLen bytes of A-Z a-z 0-9 . _ : - and not only
// dots, so it is safe in a path, a log line and a terminal, and two distinct
// ids never collapse into one.
func CheckID(field, v string) error {
	if v == "" {
		return invalid(field, "is required")
	}
	if len(v) > MaxIDLen {
		return invalid(field, fmt.Sprintf("is longer than %d bytes", MaxIDLen))
	}
	for i := range len(v) {
		if !idByte(v[i]) {
			return invalid(field, "may contain only A-Z a-z 0-9 . _ : -")
		}
	}
	if strings.Trim(v, ".") == "" {
		return invalid(field, "must not be only dots")
	}
	return nil
}

func idByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
}

// CheckShort checks a short text attribute (site, version, hostname, os,
// arch): at most MaxShortFieldLen bytes.
func CheckShort(field, v string) error {
	if len(v) > MaxShortFieldLen {
		return invalid(field, fmt.Sprintf("longer than %d bytes", MaxShortFieldLen))
	}
	return nil
}

// CheckCapabilities checks a capability list: at most MaxCapabilities
// entries of 1..MaxShortFieldLen bytes.
func CheckCapabilities(field string, caps []string) error {
	if len(caps) > MaxCapabilities {
		return invalid(field, fmt.Sprintf("more than %d entries", MaxCapabilities))
	}
	for _, c := range caps {
		if c == "" || len(c) > MaxShortFieldLen {
			return invalid(field, fmt.Sprintf("entries must be 1..%d bytes", MaxShortFieldLen))
		}
	}
	return nil
}

// CheckLabels checks a label set: at most MaxLabels, keys 1..MaxShortFieldLen
// bytes, values at most MaxShortFieldLen.
func CheckLabels(field string, labels map[string]string) error {
	if len(labels) > MaxLabels {
		return invalid(field, fmt.Sprintf("more than %d entries", MaxLabels))
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxShortFieldLen || len(v) > MaxShortFieldLen {
			return invalid(field, fmt.Sprintf("keys must be 1..%d bytes, values at most %d", MaxShortFieldLen, MaxShortFieldLen))
		}
	}
	return nil
}
