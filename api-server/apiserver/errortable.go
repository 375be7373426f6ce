package apiserver

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/viworks/backend-agent/pkg/agentspec"
	"github.com/viworks/backend-agent/pkg/store"
)

// resource is what a handler reads or changes; the error table words its
// answers with it ("no API key with this id", "at most 1000 API keys;
// revoke one first").
type resource struct {
	name    string            // singular, as in "no <name> with this id"
	plural  string            // as in "at most <max> <plural>"
	max     int               // how many the store keeps at most (store.ErrLimitReached)
	free    string            // how a client makes room: "delete" or "revoke"
	invalid string            // detail of store.ValidationErrors; default "invalid <name>"
	validID func(string) bool // a malformed id answers 404 without asking the store; default: a UUID
	key     string            // what names one, as in "no <name> with this <key>"; default "id"
}

// The resources of the API.
var (
	resAgent            = resource{name: "agent", validID: validAgentID}
	resRevokedAgent     = resource{name: "revoked agent", validID: validAgentID}
	resCommand          = resource{name: "command", plural: "commands"}
	resAlertRule        = resource{name: "alert rule", plural: "alert rules", max: store.MaxAlertRules, free: "delete"}
	resAlert            = resource{name: "alert", plural: "alerts"}
	resWebhook          = resource{name: "webhook", plural: "webhooks", max: store.MaxWebhooks, free: "delete"}
	resDelivery         = resource{name: "webhook", plural: "deliveries"} // listed under their webhook: a missing one is the webhook
	resAPIKey           = resource{name: "API key", plural: "API keys", max: store.MaxAPIKeys, free: "revoke"}
	resEnrollmentSecret = resource{name: "enrollment secret", plural: "enrollment secrets", max: store.MaxEnrollmentSecrets, free: "revoke"}
	resAuditEvent       = resource{name: "audit event", plural: "audit events"}
	resTelemetry        = resource{name: "agent", plural: "telemetry points"}
	resSchedule         = resource{name: "schedule", plural: "schedules", max: store.MaxSchedules, free: "delete"}
	resTemplate         = resource{name: "template", plural: "templates", key: "name (or it was retired)"}
)

func validAgentID(id string) bool { return agentspec.CheckID("", id) == nil }

func validUUID(id string) bool { _, err := uuid.Parse(id); return err == nil }

// listing is the resource as a list words it: its input is the query.
func (r resource) listing() resource {
	r.invalid = "invalid query parameters"
	return r
}

// answer is the response to one client-caused store error.
type answer struct {
	status     int
	detail     func(r resource) string
	field      string // the input at fault, if one is
	message    string // what is wrong with it
	retryAfter string // seconds, for an error that passes
}

// errorTable maps the store's sentinel errors to their answers: the one place
// a handler's store error becomes a status. An error not in it is the
// server's (internalError: 500, or 503 while the database is unavailable).
var errorTable = []struct {
	err error
	answer
}{
	{store.ErrNotFound, answer{status: http.StatusNotFound,
		detail: func(r resource) string { return "no " + r.name + " with this " + cmp.Or(r.key, "id") }}},
	{store.ErrBadCursor, answer{status: http.StatusBadRequest, detail: fixed("invalid query parameters"),
		field: "cursor", message: "is not a cursor returned by this list"}},
	{store.ErrLimitReached, answer{status: http.StatusUnprocessableEntity,
		detail: func(r resource) string { return fmt.Sprintf("at most %d %s; %s one first", r.max, r.plural, r.free) }}},
	{store.ErrDuplicate, answer{status: http.StatusConflict,
		detail: func(r resource) string { return "another " + r.name + " has this name" }, field: "name", message: "is taken"}},
	{store.ErrTemplateConflict, answer{status: http.StatusConflict, detail: fixed("the template changed concurrently; retry")}},
	{store.ErrCommandFinal, answer{status: http.StatusConflict, detail: fixed("the command has already finished")}},
	{store.ErrTooManyLabels, answer{status: http.StatusUnprocessableEntity,
		detail: fixed(fmt.Sprintf("the agent would have more than %d labels", agentspec.MaxLabels)),
		field:  "labels", message: fmt.Sprintf("at most %d labels in all; remove some with null", agentspec.MaxLabels)}},
	{store.ErrNoMatchingAgents, answer{status: http.StatusUnprocessableEntity, detail: fixed("no registered agent matches the selector"),
		field: "selector", message: "matches no registered agent"}},
	{store.ErrNoOnlineAgent, answer{status: http.StatusUnprocessableEntity, detail: fixed("mode any needs a matching agent that is online; none is"),
		field: "mode", message: "no matching agent is online"}},
	{store.ErrQueueFull, answer{status: http.StatusTooManyRequests, detail: fixed("the command queue is full; retry later"), retryAfter: "5"}},
	{store.ErrTooManyPoints, answer{status: http.StatusBadRequest,
		detail: fixed(fmt.Sprintf("more than %d points; choose a larger step, a shorter range or fewer metrics", store.MaxTelemetryPoints)),
		field:  "step", message: "too small for this range and these metrics"}},
}

func fixed(detail string) func(resource) string { return func(resource) string { return detail } }

// storeFailed answers a failed store call on r: a client's mistake by the
// error table (or the field problems of store.ValidationErrors), anything
// else as internalError, logged as "<doing> failed". It reports whether it
// wrote a response, false when err is nil.
func (s *Server) storeFailed(c *gin.Context, r resource, doing string, err error) bool {
	if err == nil {
		return false
	}
	var verrs store.ValidationErrors
	if errors.As(err, &verrs) {
		detail := r.invalid
		if detail == "" {
			detail = "invalid " + r.name
		}
		writeProblem(c, http.StatusBadRequest, detail, fieldErrors(verrs))
		return true
	}
	for _, e := range errorTable {
		if !errors.Is(err, e.err) {
			continue
		}
		var fields []FieldError
		if e.field != "" {
			fields = []FieldError{{Field: e.field, Message: e.message}}
		}
		if e.retryAfter != "" {
			c.Header("Retry-After", e.retryAfter)
		}
		writeProblem(c, e.status, e.detail(r), fields)
		return true
	}
	s.internalError(c, doing+" failed", err)
	return true
}

func fieldErrors(v store.ValidationErrors) []FieldError {
	out := make([]FieldError, len(v))
	for i, e := range v {
		out[i] = FieldError{Field: e.Field, Message: e.Message}
	}
	return out
}

// idParam is the :id path parameter naming an r; a malformed one answers
// 404 (ok false) without asking the store.
func idParam(c *gin.Context, r resource) (id string, ok bool) {
	id = c.Param("id")
	valid := r.validID
	if valid == nil {
		valid = validUUID
	}
	if !valid(id) {
		writeProblem(c, http.StatusNotFound, "no "+r.name+" with this id", nil)
		return "", false
	}
	return id, true
}
