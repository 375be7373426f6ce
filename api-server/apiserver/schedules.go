package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/timetable"
)

// ScheduleStore is the storage of templates and schedules.
type ScheduleStore interface {
	SaveTemplate(ctx context.Context, t store.Template, audit store.AuditEvent) (store.Template, error)
	GetTemplate(ctx context.Context, name string, version int) (store.Template, error)
	ListTemplates(ctx context.Context, p store.Page) ([]store.Template, string, error)
	TemplateVersions(ctx context.Context, name string) ([]store.Template, error)
	RetireTemplate(ctx context.Context, name string, audit store.AuditEvent) error

	CreateSchedule(ctx context.Context, sc store.Schedule, audit store.AuditEvent) (store.Schedule, error)
	GetSchedule(ctx context.Context, id string) (store.Schedule, []store.Command, error)
	ListSchedules(ctx context.Context, p store.Page) ([]store.Schedule, string, error)
	SetSchedulePaused(ctx context.Context, id string, paused bool, audit store.AuditEvent) (store.Schedule, error)
	DeleteSchedule(ctx context.Context, id string, audit store.AuditEvent) error
}

const maxScheduleNameLen = 128

// ScheduleRequest holds the schedule's own fields of POST /api/v1/schedules;
// every other field of the body is the command each run creates, as
// POST /api/v1/commands takes it (a template with params, or verb and args;
// targets and options).
type ScheduleRequest struct {
	Name            string     `json:"name"`
	Cron            string     `json:"cron"`
	Timezone        string     `json:"timezone"`
	IntervalSeconds int        `json:"interval_seconds"`
	JitterSeconds   int        `json:"jitter_seconds"`
	Overlap         string     `json:"overlap"`
	CatchUp         string     `json:"catch_up"`
	StartAt         *time.Time `json:"start_at"`
	EndAt           *time.Time `json:"end_at"`
}

var scheduleFields = map[string]bool{"name": true, "cron": true, "timezone": true, "interval_seconds": true,
	"jitter_seconds": true, "overlap": true, "catch_up": true, "start_at": true, "end_at": true}

// ScheduleCommandView is the command a schedule's runs create.
type ScheduleCommandView struct {
	Verb           string          `json:"verb"`
	Args           json.RawMessage `json:"args"`
	AgentTargets   []string        `json:"agent_targets"`
	Selector       *store.Selector `json:"selector"`
	Mode           string          `json:"mode"`
	Priority       string          `json:"priority"`
	TimeoutSeconds int             `json:"timeout_seconds"`
	MaxRetries     int             `json:"max_retries"`
	TTLSeconds     int             `json:"ttl_seconds"`
	MaxConcurrency int             `json:"max_concurrency"`
	MaxErrors      *int            `json:"max_errors"`
}

// ScheduleRunView is one run of a schedule: its command and how it went.
type ScheduleRunView struct {
	CommandID  string     `json:"command_id"`
	DueAt      time.Time  `json:"due_at"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// ScheduleView is the API shape of a schedule.
type ScheduleView struct {
	ID              string              `json:"id"`
	Name            string              `json:"name"`
	Cron            string              `json:"cron"`
	Timezone        string              `json:"timezone"`
	IntervalSeconds int                 `json:"interval_seconds"`
	JitterSeconds   int                 `json:"jitter_seconds"`
	Overlap         string              `json:"overlap"`
	CatchUp         string              `json:"catch_up"`
	StartAt         *time.Time          `json:"start_at"`
	EndAt           *time.Time          `json:"end_at"`
	Template        string              `json:"template"`
	Params          json.RawMessage     `json:"params"`
	Command         ScheduleCommandView `json:"command"`
	Paused          bool                `json:"paused"`
	NextRunAt       *time.Time          `json:"next_run_at"`
	LastRunAt       *time.Time          `json:"last_run_at"`
	LastOutcome     string              `json:"last_outcome"`
	CreatedBy       string              `json:"created_by"`
	CreatedAt       time.Time           `json:"created_at"`
	Runs            []ScheduleRunView   `json:"runs,omitempty"`
}

func scheduleView(sc store.Schedule, runs []store.Command) ScheduleView {
	var spec store.CommandSpec
	_ = json.Unmarshal(sc.Command, &spec)
	mode := spec.Mode
	if mode == "" {
		mode = store.ModeAll
	}
	v := ScheduleView{
		ID: sc.ID, Name: sc.Name, Cron: sc.Cron, Timezone: sc.Timezone, IntervalSeconds: sc.IntervalSeconds,
		JitterSeconds: sc.JitterSeconds, Overlap: sc.Overlap, CatchUp: sc.CatchUp, StartAt: sc.StartAt, EndAt: sc.EndAt,
		Template: sc.Template, Params: json.RawMessage(sc.Params), Paused: sc.Paused, NextRunAt: sc.NextRunAt,
		LastRunAt: sc.LastRunAt, LastOutcome: sc.LastOutcome, CreatedBy: sc.CreatedBy, CreatedAt: sc.CreatedAt,
		Command: ScheduleCommandView{
			Verb: spec.Verb, Args: redactArgs(store.JSON(spec.Args)), AgentTargets: spec.Targeting.AgentIDs, Selector: spec.Targeting.Selector,
			Mode: mode, Priority: spec.Priority.String(), TimeoutSeconds: spec.TimeoutSeconds, MaxRetries: spec.MaxRetries,
			TTLSeconds: spec.TTLSeconds, MaxConcurrency: spec.MaxConcurrency, MaxErrors: spec.MaxErrors,
		},
	}
	if v.Command.AgentTargets == nil {
		v.Command.AgentTargets = []string{}
	}
	if runs != nil {
		v.Runs = make([]ScheduleRunView, 0, len(runs))
		for _, r := range runs {
			rv := ScheduleRunView{CommandID: r.ID, Status: r.Status, CreatedAt: r.CreatedAt, FinishedAt: r.FinishedAt}
			if r.DueAt != nil {
				rv.DueAt = *r.DueAt
			}
			v.Runs = append(v.Runs, rv)
		}
	}
	return v
}

// decodeSchedule splits a schedule body into the schedule's fields and the
// command its runs create, and validates both; every problem names its JSON
// pointer.
func (s *Server) decodeSchedule(c *gin.Context, body []byte) (ScheduleRequest, store.NewCommand, *expansion, []FieldError, error) {
	var req ScheduleRequest
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return req, store.NewCommand{}, nil, []FieldError{pointerError("/body", jsonProblem(err))}, nil
	}
	own, command := map[string]json.RawMessage{}, map[string]json.RawMessage{}
	for k, v := range fields {
		if scheduleFields[k] {
			own[k] = v
		} else {
			command[k] = v
		}
	}
	ownJSON, _ := json.Marshal(own)
	dec := json.NewDecoder(bytes.NewReader(ownJSON))
	if err := dec.Decode(&req); err != nil {
		return req, store.NewCommand{}, nil, []FieldError{pointerError("/body", jsonProblem(err))}, nil
	}
	var errs []FieldError
	if strings.TrimSpace(req.Name) == "" || len(req.Name) > maxScheduleNameLen {
		errs = append(errs, pointerError("/name", fmt.Sprintf("is required: 1-%d bytes", maxScheduleNameLen)))
	}
	if req.JitterSeconds < 0 || time.Duration(req.JitterSeconds)*time.Second > timetable.MaxJitter {
		errs = append(errs, pointerError("/jitter_seconds", fmt.Sprintf("must be from 0 to %d", int(timetable.MaxJitter/time.Second))))
	}
	if req.Overlap != "" && req.Overlap != store.OverlapSkip && req.Overlap != store.OverlapAllow && req.Overlap != store.OverlapCancelPrevious {
		errs = append(errs, pointerError("/overlap", "must be skip, allow or cancel_previous"))
	}
	if req.CatchUp != "" && req.CatchUp != store.CatchUpSkip && req.CatchUp != store.CatchUpOnce {
		errs = append(errs, pointerError("/catch_up", "must be skip or once"))
	}
	if _, err := timetable.Parse(timetableSpec(req)); err != nil {
		var te *timetable.Error
		if !errors.As(err, &te) {
			return req, store.NewCommand{}, nil, nil, err
		}
		errs = append(errs, pointerError("/"+te.Field, te.Message))
	}
	commandBody, _ := json.Marshal(command)
	exp, terrs, err := s.expandTemplate(c, commandBody)
	if err != nil {
		return req, store.NewCommand{}, nil, nil, err
	}
	errs = append(errs, terrs...)
	if len(terrs) == 0 {
		if exp != nil {
			commandBody = exp.body
		}
		creq, cerrs := DecodeCommandRequest(commandBody, s.cfg.MaxTargets)
		for _, e := range cerrs {
			errs = append(errs, commandFieldError(e))
		}
		if len(cerrs) == 0 && len(errs) == 0 {
			nc, err := s.newCommand(c, creq, exp)
			return req, nc, exp, nil, err
		}
	}
	return req, store.NewCommand{}, nil, errs, nil
}

func timetableSpec(req ScheduleRequest) timetable.Spec {
	return timetable.Spec{Cron: req.Cron, Timezone: req.Timezone, Interval: time.Duration(req.IntervalSeconds) * time.Second,
		Anchor: time.Now(), Start: req.StartAt, End: req.EndAt}
}

func (s *Server) createSchedule(c *gin.Context) {
	var fields map[string]json.RawMessage
	if !readStrict(c, &fields) {
		return
	}
	body, _ := json.Marshal(fields)
	req, nc, exp, errs, err := s.decodeSchedule(c, body)
	if err != nil {
		s.internalError(c, "validating schedule failed", err)
		return
	}
	if len(errs) > 0 {
		writeProblem(c, http.StatusUnprocessableEntity, "invalid schedule", errs)
		return
	}
	spec, err := json.Marshal(store.SpecOf(nc))
	if err != nil {
		s.internalError(c, "encoding the schedule's command failed", err)
		return
	}
	sc := store.Schedule{
		Name: req.Name, Cron: req.Cron, Timezone: req.Timezone, IntervalSeconds: req.IntervalSeconds, JitterSeconds: req.JitterSeconds,
		Overlap: req.Overlap, CatchUp: req.CatchUp, StartAt: utcPtr(req.StartAt), EndAt: utcPtr(req.EndAt), Command: spec, CreatedBy: nc.CreatedBy,
	}
	details := map[string]any{"name": req.Name, "cron": req.Cron, "timezone": req.Timezone, "interval_seconds": req.IntervalSeconds, "verb": nc.Verb}
	if exp != nil {
		params, _ := json.Marshal(exp.params)
		sc.Template, sc.Params = exp.ref, params
		details["template"], details["params"] = exp.ref, exp.params
	}
	saved, err := s.store.CreateSchedule(c.Request.Context(), sc, auditEvent(c, "schedule.create", details))
	var te *timetable.Error
	switch {
	case errors.As(err, &te):
		writeProblem(c, http.StatusUnprocessableEntity, "invalid schedule", []FieldError{pointerError("/"+te.Field, te.Message)})
		return
	case s.storeFailed(c, resSchedule, "creating schedule", err):
		return
	}
	c.Header("Location", "/api/v1/schedules/"+saved.ID)
	c.JSON(http.StatusCreated, scheduleView(saved, []store.Command{}))
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func (s *Server) listSchedules(c *gin.Context) {
	listPage(s, c, resSchedule, pageOnly, s.store.ListSchedules, func(sc store.Schedule) ScheduleView { return scheduleView(sc, nil) })
}

func (s *Server) getSchedule(c *gin.Context) {
	id, ok := idParam(c, resSchedule)
	if !ok {
		return
	}
	sc, runs, err := s.store.GetSchedule(c.Request.Context(), id)
	if s.storeFailed(c, resSchedule, "getting schedule", err) {
		return
	}
	if runs == nil {
		runs = []store.Command{}
	}
	c.JSON(http.StatusOK, scheduleView(sc, runs))
}

func (s *Server) pauseSchedule(c *gin.Context)  { s.setPaused(c, true) }
func (s *Server) resumeSchedule(c *gin.Context) { s.setPaused(c, false) }

func (s *Server) setPaused(c *gin.Context, paused bool) {
	id, ok := idParam(c, resSchedule)
	if !ok {
		return
	}
	action := "schedule.resume"
	if paused {
		action = "schedule.pause"
	}
	_, err := s.store.SetSchedulePaused(c.Request.Context(), id, paused, auditEvent(c, action, nil))
	if s.storeFailed(c, resSchedule, "pausing or resuming schedule", err) {
		return
	}
	s.getSchedule(c)
}

func (s *Server) deleteSchedule(c *gin.Context) {
	s.removeByID(c, resSchedule, "schedule.delete", nil, s.store.DeleteSchedule)
}

// scheduleRoutes registers the templates and schedules (docs/schedules.md).
func (s *Server) scheduleRoutes(v1 *gin.RouterGroup) {
	v1.POST("/templates", s.require(auth.RoleAdmin), s.createTemplate)
	v1.GET("/templates", s.require(auth.RoleViewer), s.listTemplates)
	v1.GET("/templates/:name", s.require(auth.RoleViewer), s.getTemplate)
	v1.DELETE("/templates/:name", s.require(auth.RoleAdmin), s.retireTemplate)
	v1.GET("/templates/:name/versions", s.require(auth.RoleViewer), s.templateVersions)
	v1.GET("/templates/:name/versions/:version", s.require(auth.RoleViewer), s.getTemplate)
	v1.POST("/schedules", s.require(auth.RoleOperator), s.createSchedule)
	v1.GET("/schedules", s.require(auth.RoleViewer), s.listSchedules)
	v1.GET("/schedules/:id", s.require(auth.RoleViewer), s.getSchedule)
	v1.DELETE("/schedules/:id", s.require(auth.RoleOperator), s.deleteSchedule)
	v1.POST("/schedules/:id/pause", s.require(auth.RoleOperator), s.pauseSchedule)
	v1.POST("/schedules/:id/resume", s.require(auth.RoleOperator), s.resumeSchedule)
}
