package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/agentspec"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
)

const (
	maxTimeout        = 24 * time.Hour
	maxTimeoutSeconds = int(maxTimeout / time.Second)
	maxTTLSeconds     = 30 * 24 * 3600
	maxRetriesCap     = 20
)

var verbPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// SelectorRequest chooses agents by attributes.
type SelectorRequest struct {
	Site       string            `json:"site"`
	Labels     map[string]string `json:"labels"`
	Capability string            `json:"capability"`
}

// CommandRequest is the body of POST /api/v1/commands.
type CommandRequest struct {
	Verb           string           `json:"verb"`
	Args           json.RawMessage  `json:"args"`
	AgentTargets   []string         `json:"agent_targets"`
	Selector       *SelectorRequest `json:"selector"`
	Mode           string           `json:"mode"`
	Priority       string           `json:"priority"`
	TimeoutSeconds *int             `json:"timeout_seconds"`
	MaxRetries     *int             `json:"max_retries"`
	TTLSeconds     *int             `json:"ttl_seconds"`
	MaxConcurrency *int             `json:"max_concurrency"`
	MaxErrors      *int             `json:"max_errors"`
}

const (
	maxSelectorLabels   = 32
	maxSelectorValueLen = 256
	maxConcurrencyCap   = 1_000_000
)

// DecodeCommandRequest parses and validates a command request body. It never
// panics on any input; problems are returned per field.
func DecodeCommandRequest(body []byte, maxTargets int) (CommandRequest, []FieldError) {
	var req CommandRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, []FieldError{{Field: "body", Message: jsonProblem(err)}}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, []FieldError{{Field: "body", Message: "trailing data after the JSON object"}}
	}
	var errs []FieldError
	if !verbPattern.MatchString(req.Verb) {
		errs = append(errs, FieldError{Field: "verb", Message: "is required: 1-64 characters of a-z, 0-9, _ . - starting with a letter"})
	}
	if len(req.Args) > 0 && string(req.Args) != "null" {
		var obj map[string]any
		if json.Unmarshal(req.Args, &obj) != nil {
			errs = append(errs, FieldError{Field: "args", Message: "must be a JSON object"})
		}
		// An echo prints its message: one longer than the agent protocol's
		// output limit could only come back cut.
		if msg, ok := obj["message"].(string); ok && req.Verb == "echo" && len(msg) > agentspec.MaxOutputBytes {
			errs = append(errs, FieldError{Field: "args.message", Message: fmt.Sprintf("an echo's message must be at most %d bytes (the agent protocol's output limit)", agentspec.MaxOutputBytes)})
		}
	}
	hasSelector := req.Selector != nil && (req.Selector.Site != "" || len(req.Selector.Labels) > 0 || req.Selector.Capability != "")
	switch {
	case len(req.AgentTargets) == 0 && !hasSelector:
		errs = append(errs, FieldError{Field: "agent_targets", Message: "agent_targets or selector is required"})
	case len(req.AgentTargets) > maxTargets:
		errs = append(errs, FieldError{Field: "agent_targets", Message: fmt.Sprintf("at most %d agents per command", maxTargets)})
	default:
		for i, id := range req.AgentTargets {
			if agentspec.CheckID("", id) != nil {
				errs = append(errs, FieldError{Field: fmt.Sprintf("agent_targets[%d]", i), Message: "must be " + agentspec.IDRule})
				break
			}
		}
	}
	if req.Selector != nil {
		errs = append(errs, validateSelector(*req.Selector)...)
	}
	if req.Mode != "" && req.Mode != store.ModeAll && req.Mode != store.ModeAny {
		errs = append(errs, FieldError{Field: "mode", Message: "must be all or any"})
	}
	if req.MaxConcurrency != nil && (*req.MaxConcurrency < 1 || *req.MaxConcurrency > maxConcurrencyCap) {
		errs = append(errs, FieldError{Field: "max_concurrency", Message: fmt.Sprintf("must be from 1 to %d", maxConcurrencyCap)})
	}
	if req.MaxErrors != nil && (*req.MaxErrors < 0 || *req.MaxErrors > maxConcurrencyCap) {
		errs = append(errs, FieldError{Field: "max_errors", Message: fmt.Sprintf("must be from 0 to %d", maxConcurrencyCap)})
	}
	if _, ok := store.ParsePriority(req.Priority); !ok {
		errs = append(errs, FieldError{Field: "priority", Message: "must be low, normal, high or critical"})
	}
	if req.TimeoutSeconds != nil && (*req.TimeoutSeconds < 1 || *req.TimeoutSeconds > maxTimeoutSeconds) {
		errs = append(errs, FieldError{Field: "timeout_seconds", Message: "must be from 1 to 86400"})
	}
	if req.MaxRetries != nil && (*req.MaxRetries < 0 || *req.MaxRetries > maxRetriesCap) {
		errs = append(errs, FieldError{Field: "max_retries", Message: fmt.Sprintf("must be from 0 to %d", maxRetriesCap)})
	}
	if req.TTLSeconds != nil && (*req.TTLSeconds < 1 || *req.TTLSeconds > maxTTLSeconds) {
		errs = append(errs, FieldError{Field: "ttl_seconds", Message: "must be from 1 to 2592000 (30 days)"})
	}
	return req, errs
}

func validateSelector(sel SelectorRequest) []FieldError {
	var errs []FieldError
	if len(sel.Site) > maxSelectorValueLen {
		errs = append(errs, FieldError{Field: "selector.site", Message: "longer than 256 bytes"})
	}
	if len(sel.Capability) > maxSelectorValueLen {
		errs = append(errs, FieldError{Field: "selector.capability", Message: "longer than 256 bytes"})
	}
	if len(sel.Labels) > maxSelectorLabels {
		errs = append(errs, FieldError{Field: "selector.labels", Message: fmt.Sprintf("at most %d labels", maxSelectorLabels)})
	}
	for k, v := range sel.Labels {
		if k == "" || len(k) > maxSelectorValueLen || len(v) > maxSelectorValueLen {
			errs = append(errs, FieldError{Field: "selector.labels", Message: "keys must be 1-256 bytes, values at most 256"})
			break
		}
	}
	return errs
}

func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %s must be %s", typ.Field, typ.Type.String())
		}
		return "must be a JSON object"
	case errors.Is(err, io.EOF):
		return "is empty; a JSON object is required"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed JSON"
}

func (s *Server) createCommand(c *gin.Context) {
	body, ok := s.readBody(c)
	if !ok {
		return
	}
	exp, errs, err := s.expandTemplate(c, body)
	if err != nil {
		s.internalError(c, "expanding the command template failed", err)
		return
	}
	status := http.StatusBadRequest
	if exp != nil || len(errs) > 0 {
		status = http.StatusUnprocessableEntity // the template's params (templates.go)
	}
	var req CommandRequest
	if len(errs) == 0 {
		if exp != nil {
			body = exp.body
		}
		req, errs = DecodeCommandRequest(body, s.cfg.MaxTargets)
	}
	if len(errs) > 0 {
		writeProblem(c, status, "invalid command request", errs)
		return
	}
	nc, err := s.newCommand(c, req, exp)
	if err != nil {
		s.internalError(c, "sealing command args failed", err)
		return
	}
	cmd, execs, err := s.store.CreateCommand(c.Request.Context(), nc)
	if s.targetProblem(c, req.Verb, err) || s.storeFailed(c, resCommand, "creating command", err) {
		return
	}
	s.send.Wake(c.Request.Context(), bus.Wake{Reason: bus.WakeCommand, CommandID: cmd.ID})
	s.events.Command(c.Request.Context(), cmd.ID, cmd.Status)
	c.Header("Location", "/api/v1/commands/"+cmd.ID)
	c.JSON(http.StatusAccepted, commandView(cmd, execs))
}

// newCommand is the command req asks for (exp: the template it was expanded
// from, or nil): the API's defaults applied, secret args sealed, its audit
// event. POST /api/v1/commands creates it; a schedule stores it for its runs.
func (s *Server) newCommand(c *gin.Context, req CommandRequest, exp *expansion) (store.NewCommand, error) {
	prio, _ := store.ParsePriority(req.Priority)
	timeout := int(s.cfg.DefaultTimeout / time.Second)
	if req.TimeoutSeconds != nil {
		timeout = *req.TimeoutSeconds
	}
	retries := s.cfg.DefaultMaxRetries
	if req.MaxRetries != nil {
		retries = *req.MaxRetries
	}
	ttl := int(s.cfg.DefaultTTL / time.Second)
	if req.TTLSeconds != nil {
		ttl = *req.TTLSeconds
	}
	args := store.JSON(req.Args)
	if len(args) == 0 || string(args) == "null" {
		args = store.JSON("{}")
	}
	p := principal(c)
	targeting := store.Targeting{AgentIDs: req.AgentTargets}
	if req.Selector != nil {
		targeting.Selector = &store.Selector{Site: req.Selector.Site, Labels: req.Selector.Labels, Capability: req.Selector.Capability}
	}
	details := map[string]any{"verb": req.Verb, "args": json.RawMessage(redactArgs(args)), "targeting": targeting, "mode": req.Mode, "priority": prio.String()}
	if exp != nil {
		details["template"], details["params"] = exp.ref, exp.params
	}
	detailsJSON, _ := json.Marshal(details)
	sealed := false
	if s.cfg.Args != nil {
		out, ok, err := s.cfg.Args.Seal(args)
		if err != nil {
			return store.NewCommand{}, fmt.Errorf("sealing command args: %w", err)
		}
		args, sealed = store.JSON(out), ok
	}
	nc := store.NewCommand{
		Verb: req.Verb, Args: args, ArgsSealed: sealed, Priority: prio, CreatedBy: p.Subject,
		TimeoutSeconds: timeout, MaxRetries: retries, TTLSeconds: ttl, Mode: req.Mode, Targeting: targeting,
		MaxErrors: req.MaxErrors, MaxQueued: s.cfg.MaxQueued,
		Audit: store.AuditEvent{Actor: p.Subject, Action: "command.create", RequestID: c.GetString(ctxRequestID), Details: detailsJSON},
	}
	if req.MaxConcurrency != nil {
		nc.MaxConcurrency = *req.MaxConcurrency
	}
	return nc, nil
}

// targetProblem answers the targeting mistakes that name the agents at fault
// (the error table answers the others); it reports whether it wrote a
// response.
func (s *Server) targetProblem(c *gin.Context, verb string, err error) bool {
	var unknown *store.UnknownAgentsError
	var incapable *store.IncapableAgentsError
	switch {
	case errors.As(err, &unknown):
		writeProblem(c, http.StatusUnprocessableEntity, fmt.Sprintf("%d target agents are not registered", len(unknown.IDs)),
			[]FieldError{{Field: "agent_targets", Message: "unknown agents: " + listIDs(unknown.IDs)}})
	case errors.As(err, &incapable):
		writeProblem(c, http.StatusUnprocessableEntity, fmt.Sprintf("%d chosen agents do not announce the verb %q", len(incapable.IDs), verb),
			[]FieldError{{Field: "verb", Message: "not among the capabilities of: " + listIDs(incapable.IDs)}})
	default:
		return false
	}
	return true
}

func listIDs(ids []string) string {
	if len(ids) > 20 {
		return strings.Join(ids[:20], ", ") + fmt.Sprintf(" and %d more", len(ids)-20)
	}
	return strings.Join(ids, ", ")
}

func (s *Server) cancelCommand(c *gin.Context) {
	id, ok := idParam(c, resCommand)
	if !ok {
		return
	}
	p := principal(c)
	running, err := s.store.CancelCommand(c.Request.Context(), id, p.Subject, c.GetString(ctxRequestID))
	if s.storeFailed(c, resCommand, "cancelling command", err) {
		return
	}
	for _, r := range running {
		if r.GatewayID == "" {
			continue
		}
		s.send.Cancel(c.Request.Context(), r.GatewayID, r.AgentID, r.ExecutionID, "cancelled by "+p.Subject)
	}
	s.getCommand(c)
}

func (s *Server) getCommand(c *gin.Context) {
	id, ok := idParam(c, resCommand)
	if !ok {
		return
	}
	cmd, execs, err := s.store.GetCommand(c.Request.Context(), id)
	if s.storeFailed(c, resCommand, "getting command", err) {
		return
	}
	c.JSON(http.StatusOK, commandView(cmd, execs))
}

// ExecutionView is the API shape of one execution.
type ExecutionView struct {
	ID            string     `json:"id"`
	AgentID       string     `json:"agent_id"`
	Status        string     `json:"status"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	ExitCode      *int       `json:"exit_code"`
	Output        string     `json:"output"`
	// OutputTruncated says the agent's output was cut to the protocol's
	// output limit (it then ends with the truncation marker).
	OutputTruncated bool       `json:"output_truncated"`
	Error           string     `json:"error"`
	DispatchedAt    *time.Time `json:"dispatched_at"`
	StartedAt       *time.Time `json:"started_at"`
	FinishedAt      *time.Time `json:"finished_at"`
}

// CommandView is the API shape of a command: its summary and
// every execution.
type CommandView struct {
	CommandSummaryView
	Executions []ExecutionView `json:"executions"`
}

func commandView(cmd store.Command, execs []store.Execution) CommandView {
	counts := map[string]int{}
	for _, e := range execs {
		counts[e.Status]++
	}
	v := CommandView{CommandSummaryView: commandSummary(cmd, counts), Executions: make([]ExecutionView, 0, len(execs))}
	for _, e := range execs {
		var next *time.Time
		if e.Status == store.ExecRetrying {
			t := e.NextAttemptAt
			next = &t
		}
		v.Executions = append(v.Executions, ExecutionView{
			ID: e.ID, AgentID: e.AgentID, Status: e.Status, Attempts: e.Attempts, NextAttemptAt: next,
			ExitCode: e.ExitCode, Output: e.Output, OutputTruncated: e.OutputTruncated, Error: e.Error, DispatchedAt: e.DispatchedAt,
			StartedAt: e.StartedAt, FinishedAt: e.FinishedAt,
		})
	}
	return v
}
