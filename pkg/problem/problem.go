// Package problem writes RFC 9457 problem documents (application/problem+json):
// the one error answer of every HTTP endpoint the services serve, the REST API
// and the gateway's enrollment and upgrade endpoints alike.
package problem

import (
	"encoding/json"
	"net/http"
)

// ContentType is the media type of a problem document.
const ContentType = "application/problem+json"

// FieldError names one invalid input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
	// Pointer, where given, is the field's JSON pointer (RFC 6901) into the
	// request body, such as /params/port.
	Pointer string `json:"pointer,omitempty"`
}

// Document is an RFC 9457 problem document. Type is always "about:blank", so
// Title is the status code's text.
type Document struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
}

// New is the document of status with detail, about the resource at instance
// ("" for none), naming the invalid fields errs.
func New(status int, detail, instance string, errs []FieldError) Document {
	return Document{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Instance: instance, Errors: errs}
}

// Write answers with the document of status (see New). Headers set before it
// (Retry-After, WWW-Authenticate) are kept.
func Write(w http.ResponseWriter, status int, detail, instance string, errs []FieldError) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(New(status, detail, instance, errs))
}
