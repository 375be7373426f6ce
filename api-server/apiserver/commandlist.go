package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/agentspec"
	"github.com/viworks/backend-agent/pkg/store"
)

var commandStatuses = []string{
	store.CommandQueued, store.CommandRunning, store.CommandSucceeded, store.CommandFailed,
	store.CommandPartiallySucceeded, store.CommandCancelled, store.CommandTimedOut, store.CommandExpired,
}

// CommandSummaryView is a command in GET /commands: the command
// with its per-status counts but without the executions (GET /commands/{id}
// has them).
type CommandSummaryView struct {
	ID             string          `json:"id"`
	Verb           string          `json:"verb"`
	Args           json.RawMessage `json:"args"` // secrets redacted
	Status         string          `json:"status"`
	Priority       string          `json:"priority"`
	CreatedBy      string          `json:"created_by"`
	CreatedAt      time.Time       `json:"created_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
	TimeoutSeconds int             `json:"timeout_seconds"`
	MaxRetries     int             `json:"max_retries"`
	ExpiresAt      time.Time       `json:"expires_at"`
	Counts         map[string]int  `json:"counts"`

	// A schedule's run carries the schedule and its due time (else null).
	ScheduleID *string    `json:"schedule_id"`
	DueAt      *time.Time `json:"due_at"`
}

// parseCommandFilter reads the filters of GET /commands: status, verb,
// agent, created_by, from and to; problems are appended to errs.
func parseCommandFilter(c *gin.Context, page store.Page, errs *[]FieldError) store.CommandFilter {
	f := store.CommandFilter{Page: page}
	if f.Status = c.Query("status"); f.Status != "" && !slices.Contains(commandStatuses, f.Status) {
		*errs = append(*errs, FieldError{Field: "status", Message: "must be one of queued, running, succeeded, failed, partially_succeeded, cancelled, timed_out, expired"})
	}
	if f.Verb = c.Query("verb"); f.Verb != "" && !verbPattern.MatchString(f.Verb) {
		*errs = append(*errs, FieldError{Field: "verb", Message: "must be 1-64 characters of a-z, 0-9, _ . - starting with a letter"})
	}
	if v, ok := c.GetQuery("agent"); ok {
		if agentspec.CheckID("", v) != nil {
			*errs = append(*errs, FieldError{Field: "agent", Message: "must be an agent id of " + agentspec.IDRule})
		}
		f.AgentID = v
	}
	if f.CreatedBy = c.Query("created_by"); len(f.CreatedBy) > maxFilterLen {
		*errs = append(*errs, FieldError{Field: "created_by", Message: "longer than 256 bytes"})
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := c.Query(p.name); v != "" {
			t, ok := parseTime(v)
			if !ok {
				*errs = append(*errs, FieldError{Field: p.name, Message: "must be an RFC 3339 time or Unix seconds"})
			}
			*p.dst = t
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		*errs = append(*errs, FieldError{Field: "from", Message: "must be before to"})
	}
	return f
}

func (s *Server) listCommands(c *gin.Context) {
	listPage(s, c, resCommand, parseCommandFilter, s.commandSummaries, asIs[CommandSummaryView])
}

// commandSummaries is one page of commands with their executions' counts.
func (s *Server) commandSummaries(ctx context.Context, f store.CommandFilter) ([]CommandSummaryView, string, error) {
	cmds, next, err := s.store.ListCommands(ctx, f)
	if err != nil {
		return nil, "", err
	}
	ids := make([]string, len(cmds))
	for i, cmd := range cmds {
		ids[i] = cmd.ID
	}
	counts, err := s.store.ExecutionCounts(ctx, ids)
	if err != nil {
		return nil, "", fmt.Errorf("counting executions: %w", err)
	}
	out := make([]CommandSummaryView, 0, len(cmds))
	for _, cmd := range cmds {
		cnt := counts[cmd.ID]
		if cnt == nil {
			cnt = map[string]int{}
		}
		out = append(out, commandSummary(cmd, cnt))
	}
	return out, next, nil
}

func commandSummary(cmd store.Command, counts map[string]int) CommandSummaryView {
	return CommandSummaryView{
		ID: cmd.ID, Verb: cmd.Verb, Args: redactArgs(cmd.Args), Status: cmd.Status, Priority: cmd.Priority.String(),
		CreatedBy: cmd.CreatedBy, CreatedAt: cmd.CreatedAt, FinishedAt: cmd.FinishedAt,
		TimeoutSeconds: cmd.TimeoutSeconds, MaxRetries: cmd.MaxRetries, ExpiresAt: cmd.ExpiresAt, Counts: counts,
		ScheduleID: cmd.ScheduleID, DueAt: cmd.DueAt,
	}
}
