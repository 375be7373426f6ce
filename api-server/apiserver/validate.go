package apiserver

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// validSite checks an agent site by the agent protocol's HELLO rules.
func validSite(field, site string) *FieldError {
	if protocol.ValidateHello(&protocol.Hello{AgentID: "x", Site: site}) != nil {
		return &FieldError{Field: field, Message: fmt.Sprintf("at most %d bytes", protocol.MaxShortFieldLen)}
	}
	return nil
}

// validLabels checks agent labels by the agent protocol's HELLO rules.
func validLabels(field string, labels map[string]string) *FieldError {
	if protocol.ValidateHello(&protocol.Hello{AgentID: "x", Labels: labels}) != nil {
		return &FieldError{Field: field, Message: fmt.Sprintf("at most %d labels; keys 1-%d bytes, values at most %d", protocol.MaxLabels, protocol.MaxShortFieldLen, protocol.MaxShortFieldLen)}
	}
	return nil
}

// validName checks a required display name.
func validName(field, v string, maxLen int) *FieldError {
	if strings.TrimSpace(v) == "" || len(v) > maxLen || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return &FieldError{Field: field, Message: fmt.Sprintf("is required: 1-%d bytes of text without control characters", maxLen)}
	}
	return nil
}

// expiry turns expires_in (seconds) / expires_at into an expiry time.
func expiry(expiresIn *int, expiresAt *time.Time, now time.Time, errs *[]FieldError) *time.Time {
	switch {
	case expiresIn != nil && expiresAt != nil:
		*errs = append(*errs, FieldError{Field: "expires_at", Message: "give expires_in or expires_at, not both"})
	case expiresIn != nil:
		if *expiresIn < 60 || *expiresIn > maxExpiresIn {
			*errs = append(*errs, FieldError{Field: "expires_in", Message: fmt.Sprintf("must be from 60 to %d seconds", maxExpiresIn)})
			return nil
		}
		t := now.Add(time.Duration(*expiresIn) * time.Second)
		return &t
	case expiresAt != nil:
		if !expiresAt.After(now) || expiresAt.After(now.Add(maxExpiresIn*time.Second)) {
			*errs = append(*errs, FieldError{Field: "expires_at", Message: "must be in the future, at most two years ahead"})
			return nil
		}
		return expiresAt
	}
	return nil
}
