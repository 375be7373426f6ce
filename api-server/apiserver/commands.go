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
	"github.com/google/uuid"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

const (
	maxTimeout        = 24 * time.Hour
	maxTimeoutSeconds = int(maxTimeout / time.Second)
	maxTTLSeconds     = 30 * 24 * 3600
	maxRetriesCap     = 20
)

var (
	verbPattern    = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)
	agentIDPattern = regexp.MustCompile(`^[^\s\x00-\x1f\x7f]+$`)
)

// CommandRequest is the body of POST /api/v1/commands.
type CommandRequest struct {
	Verb           string          `json:"verb"`
	Args           json.RawMessage `json:"args"`
	AgentTargets   []string        `json:"agent_targets"`
	Priority       string          `json:"priority"`
	TimeoutSeconds *int            `json:"timeout_seconds"`
	MaxRetries     *int            `json:"max_retries"`
	TTLSeconds     *int            `json:"ttl_seconds"`
}

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
	}
	switch {
	case len(req.AgentTargets) == 0:
		errs = append(errs, FieldError{Field: "agent_targets", Message: "is required: a non-empty list of agent ids"})
	case len(req.AgentTargets) > maxTargets:
		errs = append(errs, FieldError{Field: "agent_targets", Message: fmt.Sprintf("at most %d agents per command", maxTargets)})
	default:
		for i, id := range req.AgentTargets {
			if len(id) > protocol.MaxIDLen || !agentIDPattern.MatchString(id) {
				errs = append(errs, FieldError{Field: fmt.Sprintf("agent_targets[%d]", i), Message: "must be 1-128 bytes without whitespace or control characters"})
				break
			}
		}
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

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func (s *Server) createCommand(c *gin.Context) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", s.cfg.MaxBodyBytes), nil)
			return
		}
		writeProblem(c, http.StatusBadRequest, "could not read the request body", nil)
		return
	}
	req, errs := DecodeCommandRequest(body, s.cfg.MaxTargets)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid command request", errs)
		return
	}
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
	targets := dedupe(req.AgentTargets)
	details, _ := json.Marshal(map[string]any{"verb": req.Verb, "args": json.RawMessage(redactArgs(args)), "targets": len(targets), "priority": prio.String()})
	cmd, execs, err := s.store.CreateCommand(c.Request.Context(), store.NewCommand{
		Verb: req.Verb, Args: args, Priority: prio, CreatedBy: p.Subject,
		TimeoutSeconds: timeout, MaxRetries: retries, TTLSeconds: ttl, AgentIDs: targets,
		Audit: store.AuditEvent{Actor: p.Subject, Action: "command.create", RequestID: c.GetString(ctxRequestID), Details: details},
	})
	var unknown *store.UnknownAgentsError
	if errors.As(err, &unknown) {
		shown := unknown.IDs
		if len(shown) > 20 {
			shown = shown[:20]
		}
		writeProblem(c, http.StatusUnprocessableEntity, fmt.Sprintf("%d target agents are not registered", len(unknown.IDs)),
			[]FieldError{{Field: "agent_targets", Message: "unknown agents: " + strings.Join(shown, ", ")}})
		return
	}
	if err != nil {
		s.internalError(c, "creating command failed", err)
		return
	}
	wake := bus.Encode(bus.Wake{Reason: bus.WakeCommand, CommandID: cmd.ID})
	if _, err := s.bus.Publish(c.Request.Context(), bus.TopicScheduler, wake); err != nil {
		// The command is durable; the schedulers' sweep will find it.
		s.log.WithError(err).WithField("command_id", cmd.ID).Warn("waking schedulers failed")
	}
	c.Header("Location", "/api/v1/commands/"+cmd.ID)
	c.JSON(http.StatusAccepted, commandView(cmd, execs))
}

func (s *Server) getCommand(c *gin.Context) {
	id := c.Param("id")
	if _, err := uuid.Parse(id); err != nil {
		writeProblem(c, http.StatusNotFound, "no command with this id", nil)
		return
	}
	cmd, execs, err := s.store.GetCommand(c.Request.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(c, http.StatusNotFound, "no command with this id", nil)
		return
	}
	if err != nil {
		s.internalError(c, "getting command failed", err)
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
	Error         string     `json:"error"`
	DispatchedAt  *time.Time `json:"dispatched_at"`
	StartedAt     *time.Time `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at"`
}

// CommandView is the API shape of a command (DESIGN §4).
type CommandView struct {
	ID             string          `json:"id"`
	Verb           string          `json:"verb"`
	Args           json.RawMessage `json:"args"`
	Status         string          `json:"status"`
	Priority       string          `json:"priority"`
	CreatedBy      string          `json:"created_by"`
	CreatedAt      time.Time       `json:"created_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
	TimeoutSeconds int             `json:"timeout_seconds"`
	MaxRetries     int             `json:"max_retries"`
	ExpiresAt      time.Time       `json:"expires_at"`
	Counts         map[string]int  `json:"counts"`
	Executions     []ExecutionView `json:"executions"`
}

func commandView(cmd store.Command, execs []store.Execution) CommandView {
	v := CommandView{
		ID: cmd.ID, Verb: cmd.Verb, Args: redactArgs(cmd.Args), Status: cmd.Status, Priority: cmd.Priority.String(),
		CreatedBy: cmd.CreatedBy, CreatedAt: cmd.CreatedAt, FinishedAt: cmd.FinishedAt,
		TimeoutSeconds: cmd.TimeoutSeconds, MaxRetries: cmd.MaxRetries, ExpiresAt: cmd.ExpiresAt,
		Counts: map[string]int{}, Executions: make([]ExecutionView, 0, len(execs)),
	}
	for _, e := range execs {
		v.Counts[e.Status]++
		var next *time.Time
		if e.Status == store.ExecRetrying {
			t := e.NextAttemptAt
			next = &t
		}
		v.Executions = append(v.Executions, ExecutionView{
			ID: e.ID, AgentID: e.AgentID, Status: e.Status, Attempts: e.Attempts, NextAttemptAt: next,
			ExitCode: e.ExitCode, Output: e.Output, Error: e.Error, DispatchedAt: e.DispatchedAt,
			StartedAt: e.StartedAt, FinishedAt: e.FinishedAt,
		})
	}
	return v
}
