package store

import (
	"strings"
)

// ValidationError names one invalid field of an alert rule or webhook.
type ValidationError struct {
	Field   string
	Message string
}

// ValidationErrors are the problems found in one input.
type ValidationErrors []ValidationError

func (v ValidationErrors) Error() string {
	parts := make([]string, len(v))
	for i, e := range v {
		parts[i] = e.Field + ": " + e.Message
	}
	return "invalid input: " + strings.Join(parts, "; ")
}
