package apiserver

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/viworks/backend-agent/pkg/agentspec"
)

// validSite checks an agent site by the rule HELLO applies too.
func validSite(field, site string) *FieldError {
	if agentspec.CheckShort(field, site) != nil {
		return &FieldError{Field: field, Message: fmt.Sprintf("at most %d bytes", agentspec.MaxShortFieldLen)}
	}
	return nil
}

// validLabels checks agent labels by the rule HELLO applies too.
func validLabels(field string, labels map[string]string) *FieldError {
	if agentspec.CheckLabels(field, labels) != nil {
		return &FieldError{Field: field, Message: fmt.Sprintf("at most %d labels; keys 1-%d bytes, values at most %d", agentspec.MaxLabels, agentspec.MaxShortFieldLen, agentspec.MaxShortFieldLen)}
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
