package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Alert rule kinds.
const (
	AlertAgentOffline       = "agent_offline"        // an agent offline longer than seconds; per agent
	AlertAgentUnhealthy     = "agent_unhealthy"      // an online agent whose latest heartbeat says unhealthy; per agent
	AlertMetricThreshold    = "metric_threshold"     // every telemetry sample in a window above a threshold; per agent
	AlertCommandFailureRate = "command_failure_rate" // failed share of finished executions in a window; global
)

// AlertKinds lists the rule kinds.
var AlertKinds = []string{AlertAgentOffline, AlertAgentUnhealthy, AlertMetricThreshold, AlertCommandFailureRate}

// SubjectGlobal is the subject of alerts that are not about one agent.
const SubjectGlobal = "global"

// Alert events (webhook deliveries).
const (
	EventAlertFired    = "alert.fired"
	EventAlertResolved = "alert.resolved"
)

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// Bounds of the alerting tables.
const (
	MaxAlertRules       = 1000 // rules in all
	MaxWebhooks         = 50   // webhooks in all; each alert event becomes one delivery per enabled webhook
	MaxRuleNameLen      = 128
	MaxAlertWindow      = 30 * 24 * 3600 // seconds: agent_offline, agent_unhealthy, command_failure_rate
	MaxMetricWindow     = 24 * 3600      // seconds: metric_threshold scans every sample in its window
	MaxResponseBodySize = 512            // bytes of a receiver's response body kept in the log (when configured)
	MaxResponseRead     = 64 << 10       // bytes of a receiver's response body read (and counted)
	maxPageLimit        = 1000
	defaultPageLimit    = 50
)

// Errors of the alerting store.
var (
	ErrDuplicate    = errors.New("already exists")
	ErrLimitReached = errors.New("limit reached")
	ErrBadCursor    = errors.New("invalid cursor")
)

// AlertRule is a stored alert rule.
type AlertRule struct {
	ID        string `gorm:"primaryKey"`
	Name      string `gorm:"not null"`
	Kind      string `gorm:"not null"`
	Params    JSON   `gorm:"type:jsonb;not null"` // normalized by ParseAlertParams
	Enabled   bool   `gorm:"not null"`
	CreatedBy string `gorm:"not null"`
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Alert is one firing of a rule for a subject: open while ResolvedAt is nil.
type Alert struct {
	ID         string `gorm:"primaryKey"`
	RuleID     string `gorm:"not null"`
	RuleName   string `gorm:"not null"`
	Kind       string `gorm:"not null"`
	Subject    string `gorm:"not null"` // agent id, or SubjectGlobal
	Details    JSON   `gorm:"type:jsonb;not null"`
	FiredAt    time.Time
	ResolvedAt *time.Time
}

// Webhook is a receiver of alert events.
type Webhook struct {
	ID        string `gorm:"primaryKey"`
	URL       string `gorm:"column:url;not null"`
	Secret    string `gorm:"not null" json:"-"` // signs deliveries; never listed
	Enabled   bool   `gorm:"not null"`
	CreatedBy string `gorm:"not null"`
	CreatedAt time.Time
}

// WebhookDelivery is one alert event sent (or to be sent) to one webhook.
type WebhookDelivery struct {
	ID            string `gorm:"primaryKey"`
	WebhookID     string `gorm:"not null"`
	AlertID       string `gorm:"not null"`
	Event         string `gorm:"not null"`
	Payload       JSON   `gorm:"type:jsonb;not null"`
	Status        string `gorm:"not null"`
	Attempts      int    `gorm:"not null"`
	LastError     string `gorm:"not null"`
	ResponseCode  *int
	ResponseBody  string `gorm:"not null"` // empty unless alerts.webhook_store_response_body
	ResponseBytes *int64 // size of the answer's body (read up to MaxResponseRead)
	ClaimedUntil  *time.Time
	LastAttemptAt *time.Time
	DeliveredAt   *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

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

// AgentOfflineParams are the params of an agent_offline rule.
type AgentOfflineParams struct {
	Seconds  int       `json:"seconds"` // offline (since last_seen_at) longer than this
	Selector *Selector `json:"selector,omitempty"`
}

// AgentUnhealthyParams are the params of an agent_unhealthy rule.
type AgentUnhealthyParams struct {
	Seconds  int       `json:"seconds"` // continuously unhealthy at least this long (0: at once)
	Selector *Selector `json:"selector,omitempty"`
}

// MetricThresholdParams are the params of a metric_threshold rule.
type MetricThresholdParams struct {
	Metric     string    `json:"metric"`
	Threshold  float64   `json:"threshold"`
	ForSeconds int       `json:"for_seconds"`
	Selector   *Selector `json:"selector,omitempty"`
}

// CommandFailureRateParams are the params of a command_failure_rate rule.
type CommandFailureRateParams struct {
	WindowSeconds int     `json:"window_seconds"`
	Rate          float64 `json:"rate"`
	MinExecutions int     `json:"min_executions"`
}

// Raw shapes with pointers, so that missing required fields are told apart.
type rawSelector struct {
	Site       *string           `json:"site"`
	Labels     map[string]string `json:"labels"`
	Capability *string           `json:"capability"`
}

type rawAgentParams struct {
	Seconds  *int         `json:"seconds"`
	Selector *rawSelector `json:"selector"`
}

type rawMetricParams struct {
	Metric     *string      `json:"metric"`
	Threshold  *float64     `json:"threshold"`
	ForSeconds *int         `json:"for_seconds"`
	Selector   *rawSelector `json:"selector"`
}

type rawFailureParams struct {
	WindowSeconds *int     `json:"window_seconds"`
	Rate          *float64 `json:"rate"`
	MinExecutions *int     `json:"min_executions"`
}

// metricPattern: metric names usable as a JSON key in both dialects' path syntax.
var metricPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$`)

// ParseAlertParams validates a rule's params for its kind and returns the
// typed params (AgentOfflineParams, AgentUnhealthyParams, MetricThresholdParams
// or CommandFailureRateParams) and their normalized JSON. Problems come back as
// ValidationErrors naming each field ("kind", "params", "params.seconds", ...).
func ParseAlertParams(kind string, raw []byte) (any, JSON, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = []byte("{}")
	}
	var errs ValidationErrors
	add := func(field, msg string) { errs = append(errs, ValidationError{Field: field, Message: msg}) }
	var out any
	switch kind {
	case AlertAgentOffline, AlertAgentUnhealthy:
		var p rawAgentParams
		if err := decodeStrict(raw, &p); err != nil {
			return nil, nil, ValidationErrors{{Field: "params", Message: err.Error()}}
		}
		seconds := 0
		switch {
		case p.Seconds == nil && kind == AlertAgentOffline:
			add("params.seconds", "is required: how long, in seconds, an agent must be offline")
		case p.Seconds != nil && (*p.Seconds < 0 || *p.Seconds > MaxAlertWindow):
			add("params.seconds", fmt.Sprintf("must be from 0 to %d", MaxAlertWindow))
		case p.Seconds != nil:
			seconds = *p.Seconds
		}
		sel := checkSelector(p.Selector, add)
		if kind == AlertAgentOffline {
			out = AgentOfflineParams{Seconds: seconds, Selector: sel}
		} else {
			out = AgentUnhealthyParams{Seconds: seconds, Selector: sel}
		}
	case AlertMetricThreshold:
		var p rawMetricParams
		if err := decodeStrict(raw, &p); err != nil {
			return nil, nil, ValidationErrors{{Field: "params", Message: err.Error()}}
		}
		mp := MetricThresholdParams{}
		switch {
		case p.Metric == nil || *p.Metric == "":
			add("params.metric", "is required: a telemetry metric name such as cpu_percent")
		case !metricPattern.MatchString(*p.Metric):
			add("params.metric", "must be 1-128 characters of A-Z a-z 0-9 _ . : - (not starting with . : -)")
		default:
			mp.Metric = *p.Metric
		}
		switch {
		case p.Threshold == nil:
			add("params.threshold", "is required: the value every sample must exceed")
		case math.IsNaN(*p.Threshold) || math.IsInf(*p.Threshold, 0):
			add("params.threshold", "must be a finite number")
		default:
			mp.Threshold = *p.Threshold
		}
		switch {
		case p.ForSeconds == nil:
			add("params.for_seconds", "is required: the window, in seconds, every sample of which must be above the threshold")
		case *p.ForSeconds < 1 || *p.ForSeconds > MaxMetricWindow:
			add("params.for_seconds", fmt.Sprintf("must be from 1 to %d", MaxMetricWindow))
		default:
			mp.ForSeconds = *p.ForSeconds
		}
		mp.Selector = checkSelector(p.Selector, add)
		out = mp
	case AlertCommandFailureRate:
		var p rawFailureParams
		if err := decodeStrict(raw, &p); err != nil {
			return nil, nil, ValidationErrors{{Field: "params", Message: err.Error()}}
		}
		fp := CommandFailureRateParams{MinExecutions: 1}
		switch {
		case p.WindowSeconds == nil:
			add("params.window_seconds", "is required: the window, in seconds, of finished executions")
		case *p.WindowSeconds < 1 || *p.WindowSeconds > MaxAlertWindow:
			add("params.window_seconds", fmt.Sprintf("must be from 1 to %d", MaxAlertWindow))
		default:
			fp.WindowSeconds = *p.WindowSeconds
		}
		switch {
		case p.Rate == nil:
			add("params.rate", "is required: the failed share (0 to 1) that must be exceeded")
		case math.IsNaN(*p.Rate) || *p.Rate < 0 || *p.Rate >= 1:
			add("params.rate", "must be at least 0 and below 1")
		default:
			fp.Rate = *p.Rate
		}
		if p.MinExecutions != nil {
			if *p.MinExecutions < 1 || *p.MinExecutions > 1_000_000 {
				add("params.min_executions", "must be from 1 to 1000000")
			} else {
				fp.MinExecutions = *p.MinExecutions
			}
		}
		out = fp
	default:
		return nil, nil, ValidationErrors{{Field: "kind", Message: "must be one of " + strings.Join(AlertKinds, ", ")}}
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	norm, err := json.Marshal(out)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding params: %w", err)
	}
	return out, norm, nil
}

func decodeStrict(raw []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typ) && typ.Field != "":
			return fmt.Errorf("field %s must be %s", typ.Field, typ.Type.String())
		case errors.As(err, &typ):
			return errors.New("must be a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return errors.New(strings.TrimPrefix(err.Error(), "json: "))
		}
		return errors.New("must be a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func checkSelector(r *rawSelector, add func(field, msg string)) *Selector {
	if r == nil {
		return nil
	}
	sel := &Selector{Labels: r.Labels}
	if r.Site != nil {
		sel.Site = *r.Site
	}
	if r.Capability != nil {
		sel.Capability = *r.Capability
	}
	if len(sel.Site) > 256 {
		add("params.selector.site", "longer than 256 bytes")
	}
	if len(sel.Capability) > 256 {
		add("params.selector.capability", "longer than 256 bytes")
	}
	if len(sel.Labels) > 32 {
		add("params.selector.labels", "at most 32 labels")
	}
	for k, v := range sel.Labels {
		if k == "" || len(k) > 256 || len(v) > 256 {
			add("params.selector.labels", "keys must be 1-256 bytes, values at most 256")
			break
		}
	}
	if sel.Empty() {
		return nil
	}
	return sel
}

// matches reports whether an agent satisfies a selector (nil matches all).
func (s *Selector) matches(a Agent) bool {
	if s.Empty() {
		return true
	}
	if s.Site != "" && a.Site != s.Site {
		return false
	}
	if s.Capability != "" && !slices.Contains([]string(a.Capabilities), s.Capability) {
		return false
	}
	for k, v := range s.Labels {
		if a.Labels[k] != v {
			return false
		}
	}
	return true
}

// Page selects one page of a list: at most Limit items (default 50, at most
// 1000) after Cursor (as returned with the previous page).
type Page struct {
	Limit  int
	Cursor string
}

func (p Page) limit() int {
	switch {
	case p.Limit <= 0:
		return defaultPageLimit
	case p.Limit > maxPageLimit:
		return maxPageLimit
	}
	return p.Limit
}

// cursor is a keyset position (time, id), opaque to clients.
func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixNano(), 10) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	if len(c) > 512 {
		return time.Time{}, "", ErrBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", ErrBadCursor
	}
	ns, id, ok := strings.Cut(string(b), "|")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", ErrBadCursor
	}
	return time.Unix(0, n).UTC(), id, nil
}

// keyset applies a (column, id) keyset page to q: ascending or descending.
func keyset(q *gorm.DB, p Page, column string, desc bool) (*gorm.DB, error) {
	dir, op := "ASC", ">"
	if desc {
		dir, op = "DESC", "<"
	}
	if p.Cursor != "" {
		t, id, err := decodeCursor(p.Cursor)
		if err != nil {
			return nil, err
		}
		q = q.Where(fmt.Sprintf("(%[1]s %[2]s ? OR (%[1]s = ? AND id %[2]s ?))", column, op), t, t, id)
	}
	return q.Order(column + " " + dir).Order("id " + dir).Limit(p.limit() + 1), nil
}

// nextCursor trims the extra row fetched by keyset and returns the cursor of
// the next page ("" on the last page).
func nextCursor[T any](rows []T, p Page, pos func(T) (time.Time, string)) ([]T, string) {
	if len(rows) <= p.limit() {
		return rows, ""
	}
	rows = rows[:p.limit()]
	t, id := pos(rows[len(rows)-1])
	return rows, encodeCursor(t, id)
}

// NewAlertRule is what CreateAlertRule needs.
type NewAlertRule struct {
	Name      string
	Kind      string
	Params    JSON
	Enabled   bool
	CreatedBy string
	Audit     AuditEvent // written in the same transaction; Target is set to the rule id
}

// CreateAlertRule validates and stores a rule (with its audit event). Invalid
// input gives ValidationErrors, a taken name ErrDuplicate, more than
// MaxAlertRules rules ErrLimitReached.
func (s *Store) CreateAlertRule(ctx context.Context, nr NewAlertRule) (AlertRule, error) {
	var errs ValidationErrors
	if nr.Name == "" || len(nr.Name) > MaxRuleNameLen || !utf8.ValidString(nr.Name) || strings.ContainsFunc(nr.Name, isControl) {
		errs = append(errs, ValidationError{Field: "name", Message: fmt.Sprintf("is required: 1-%d bytes of text without control characters", MaxRuleNameLen)})
	}
	_, params, err := ParseAlertParams(nr.Kind, nr.Params)
	var verrs ValidationErrors
	switch {
	case errors.As(err, &verrs):
		errs = append(errs, verrs...)
	case err != nil:
		return AlertRule{}, err
	}
	if len(errs) > 0 {
		return AlertRule{}, errs
	}
	now := time.Now().UTC()
	rule := AlertRule{
		ID: uuid.NewString(), Name: nr.Name, Kind: nr.Kind, Params: params, Enabled: nr.Enabled,
		CreatedBy: nr.CreatedBy, CreatedAt: now, UpdatedAt: now,
	}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&AlertRule{}).Count(&n).Error; err != nil {
			return fmt.Errorf("counting alert rules: %w", err)
		}
		if n >= MaxAlertRules {
			return fmt.Errorf("%w: at most %d alert rules", ErrLimitReached, MaxAlertRules)
		}
		var taken int64
		if err := tx.Model(&AlertRule{}).Where("name = ?", nr.Name).Count(&taken).Error; err != nil {
			return fmt.Errorf("checking rule name: %w", err)
		}
		if taken > 0 {
			return fmt.Errorf("%w: an alert rule named %q", ErrDuplicate, nr.Name)
		}
		if err := tx.Create(&rule).Error; err != nil {
			return fmt.Errorf("inserting alert rule: %w", err)
		}
		return s.insertAudit(tx, nr.Audit, rule.ID, now)
	})
	if err != nil {
		return AlertRule{}, err
	}
	return rule, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// ListAlertRules lists rules oldest first.
func (s *Store) ListAlertRules(ctx context.Context, p Page) ([]AlertRule, string, error) {
	q, err := keyset(s.db.WithContext(ctx).Model(&AlertRule{}), p, "created_at", false)
	if err != nil {
		return nil, "", err
	}
	var rows []AlertRule
	if err := q.Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing alert rules: %w", err)
	}
	rows, next := nextCursor(rows, p, func(r AlertRule) (time.Time, string) { return r.CreatedAt, r.ID })
	return rows, next, nil
}

// EnabledAlertRules returns every enabled rule (at most MaxAlertRules exist).
func (s *Store) EnabledAlertRules(ctx context.Context) ([]AlertRule, error) {
	var rows []AlertRule
	if err := s.db.WithContext(ctx).Where("enabled = ?", true).Order("created_at").Order("id").Limit(MaxAlertRules).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("listing enabled alert rules: %w", err)
	}
	return rows, nil
}

// DeleteAlertRule deletes a rule and, with it, its alerts (deliveries already
// queued keep their payload and are still sent). Unknown ids give ErrNotFound.
func (s *Store) DeleteAlertRule(ctx context.Context, id string, audit AuditEvent) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rule AlertRule
		res := tx.Where("id = ?", id).Limit(1).Find(&rule)
		if res.Error != nil {
			return fmt.Errorf("reading alert rule: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		// Explicit, so the result does not depend on foreign-key enforcement.
		if err := tx.Where("rule_id = ?", id).Delete(&Alert{}).Error; err != nil {
			return fmt.Errorf("deleting alerts of rule: %w", err)
		}
		if err := tx.Where("id = ?", id).Delete(&AlertRule{}).Error; err != nil {
			return fmt.Errorf("deleting alert rule: %w", err)
		}
		if len(audit.Details) == 0 {
			audit.Details, _ = json.Marshal(map[string]string{"name": rule.Name, "kind": rule.Kind})
		}
		return s.insertAudit(tx, audit, id, time.Now().UTC())
	})
}

// Alert states (ListAlerts filter).
const (
	AlertStateFiring   = "firing"
	AlertStateResolved = "resolved"
)

// AlertFilter selects alerts to list, newest first.
type AlertFilter struct {
	State  string // "", AlertStateFiring or AlertStateResolved
	RuleID string
	Page
}

// ListAlerts lists alerts newest first (by fired_at).
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, string, error) {
	q := s.db.WithContext(ctx).Model(&Alert{})
	switch f.State {
	case "":
	case AlertStateFiring:
		q = q.Where("resolved_at IS NULL")
	case AlertStateResolved:
		q = q.Where("resolved_at IS NOT NULL")
	default:
		return nil, "", ValidationErrors{{Field: "state", Message: "must be firing or resolved"}}
	}
	if f.RuleID != "" {
		q = q.Where("rule_id = ?", f.RuleID)
	}
	q, err := keyset(q, f.Page, "fired_at", true)
	if err != nil {
		return nil, "", err
	}
	var rows []Alert
	if err := q.Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing alerts: %w", err)
	}
	rows, next := nextCursor(rows, f.Page, func(a Alert) (time.Time, string) { return a.FiredAt, a.ID })
	return rows, next, nil
}

// CountOpenAlerts counts alerts that are firing.
func (s *Store) CountOpenAlerts(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.WithContext(ctx).Model(&Alert{}).Where("resolved_at IS NULL").Count(&n).Error; err != nil {
		return 0, fmt.Errorf("counting open alerts: %w", err)
	}
	return n, nil
}

// Violation is a subject for which a rule's condition holds now.
type Violation struct {
	Subject string
	Details JSON // observed values, kept with the alert when it opens
	// Pending: the condition holds but not yet long enough to open an alert;
	// an alert already open for the subject stays open.
	Pending bool
}

// PayloadFunc renders the document queued for webhooks when alert a of rule
// fires or resolves (event is EventAlertFired or EventAlertResolved).
type PayloadFunc func(event string, rule AlertRule, a Alert) (JSON, error)

// SyncResult is what SyncAlerts changed.
type SyncResult struct {
	Opened   []Alert
	Resolved []Alert
	Deferred int // violations not opened because of maxOpen; they open on a later call
}

// SyncAlerts makes the open alerts of rule match the violations found at now,
// in one transaction: a violation without an open alert opens one (unless
// Pending), an open alert without a violation is resolved, and each of those
// transitions queues one delivery per enabled webhook with payload's
// document. An alert already open is left alone: an alert fires once and
// resolves once. At most maxOpen alerts are opened per call (0: no bound).
// The unique partial index on open alerts makes concurrent callers safe.
func (s *Store) SyncAlerts(ctx context.Context, rule AlertRule, violations []Violation, now time.Time, maxOpen int, payload PayloadFunc) (SyncResult, error) {
	now = now.UTC()
	var res SyncResult
	want := make(map[string]Violation, len(violations))
	for _, v := range violations {
		want[v.Subject] = v
	}
	subjects := make([]string, 0, len(want))
	for k := range want {
		subjects = append(subjects, k)
	}
	sort.Strings(subjects)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res = SyncResult{}
		var open []Alert
		if err := tx.Where("rule_id = ? AND resolved_at IS NULL", rule.ID).Order("subject").Find(&open).Error; err != nil {
			return fmt.Errorf("reading open alerts: %w", err)
		}
		var hooks []string
		if err := tx.Model(&Webhook{}).Where("enabled = ?", true).Order("id").Pluck("id", &hooks).Error; err != nil {
			return fmt.Errorf("reading webhooks: %w", err)
		}
		var deliveries []WebhookDelivery
		enqueue := func(event string, a Alert) error {
			if len(hooks) == 0 || payload == nil {
				return nil
			}
			doc, err := payload(event, rule, a)
			if err != nil {
				return fmt.Errorf("rendering alert event: %w", err)
			}
			for _, h := range hooks {
				deliveries = append(deliveries, WebhookDelivery{
					ID: uuid.NewString(), WebhookID: h, AlertID: a.ID, Event: event, Payload: doc,
					Status: DeliveryPending, CreatedAt: now, UpdatedAt: now,
				})
			}
			return nil
		}
		isOpen := make(map[string]bool, len(open))
		for _, a := range open {
			isOpen[a.Subject] = true
			if _, ok := want[a.Subject]; ok {
				continue
			}
			r := tx.Model(&Alert{}).Where("id = ? AND resolved_at IS NULL", a.ID).Update("resolved_at", now)
			if r.Error != nil {
				return fmt.Errorf("resolving alert: %w", r.Error)
			}
			if r.RowsAffected == 0 {
				continue // resolved by a concurrent evaluator
			}
			resolved := now
			a.ResolvedAt = &resolved
			res.Resolved = append(res.Resolved, a)
			if err := enqueue(EventAlertResolved, a); err != nil {
				return err
			}
		}
		for _, subj := range subjects {
			v := want[subj]
			if isOpen[subj] || v.Pending {
				continue
			}
			if maxOpen > 0 && len(res.Opened) >= maxOpen {
				res.Deferred++
				continue
			}
			details := v.Details
			if len(details) == 0 {
				details = JSON("{}")
			}
			a := Alert{ID: uuid.NewString(), RuleID: rule.ID, RuleName: rule.Name, Kind: rule.Kind, Subject: subj, Details: details, FiredAt: now}
			r := tx.Exec(`INSERT INTO alerts (id, rule_id, rule_name, kind, subject, details, fired_at)
VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule_id, subject) WHERE resolved_at IS NULL DO NOTHING`,
				a.ID, a.RuleID, a.RuleName, a.Kind, a.Subject, a.Details, a.FiredAt)
			if r.Error != nil {
				return fmt.Errorf("opening alert: %w", r.Error)
			}
			if r.RowsAffected == 0 {
				continue // opened by a concurrent evaluator
			}
			res.Opened = append(res.Opened, a)
			if err := enqueue(EventAlertFired, a); err != nil {
				return err
			}
		}
		if len(deliveries) > 0 {
			if err := tx.CreateInBatches(deliveries, 500).Error; err != nil {
				return fmt.Errorf("queueing deliveries: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return SyncResult{}, err
	}
	return res, nil
}

// AgentSeen is an agent with the time it was last seen.
type AgentSeen struct {
	ID         string
	LastSeenAt time.Time
}

// agentRow reads the columns the rule queries need.
type agentRow struct {
	ID           string
	Site         string
	Capabilities StringList
	Labels       StringMap
	LastSeenAt   *time.Time
	UpdatedAt    time.Time
}

func (r agentRow) agent() Agent {
	return Agent{ID: r.ID, Site: r.Site, Capabilities: r.Capabilities, Labels: r.Labels}
}

func (r agentRow) seen() time.Time {
	if r.LastSeenAt != nil {
		return r.LastSeenAt.UTC()
	}
	return r.UpdatedAt.UTC()
}

// OfflineAgents returns the offline agents matching sel (nil: all) last seen
// before cutoff (last_seen_at, or updated_at when it was never seen), by id.
func (s *Store) OfflineAgents(ctx context.Context, sel *Selector, cutoff time.Time) ([]AgentSeen, error) {
	q := s.db.WithContext(ctx).Model(&Agent{}).Select("id", "site", "capabilities", "labels", "last_seen_at", "updated_at").
		Where("status = ? AND coalesce(last_seen_at, updated_at) < ?", AgentOffline, cutoff.UTC()).Order("id")
	if sel != nil && sel.Site != "" {
		q = q.Where("site = ?", sel.Site)
	}
	var rows []agentRow
	if err := q.Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("finding offline agents: %w", err)
	}
	out := make([]AgentSeen, 0, len(rows))
	for _, r := range rows {
		if sel.matches(r.agent()) {
			out = append(out, AgentSeen{ID: r.ID, LastSeenAt: r.seen()})
		}
	}
	return out, nil
}

// UnhealthyAgents returns the online agents matching sel (nil: all) whose
// latest heartbeat reported "unhealthy", by id.
func (s *Store) UnhealthyAgents(ctx context.Context, sel *Selector) ([]AgentSeen, error) {
	q := s.db.WithContext(ctx).Model(&Agent{}).Select("id", "site", "capabilities", "labels", "last_seen_at", "updated_at").
		Where("status = ? AND health_status = ?", AgentOnline, "unhealthy").Order("id")
	if sel != nil && sel.Site != "" {
		q = q.Where("site = ?", sel.Site)
	}
	var rows []agentRow
	if err := q.Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("finding unhealthy agents: %w", err)
	}
	out := make([]AgentSeen, 0, len(rows))
	for _, r := range rows {
		if sel.matches(r.agent()) {
			out = append(out, AgentSeen{ID: r.ID, LastSeenAt: r.seen()})
		}
	}
	return out, nil
}

// MetricBreach is an agent all of whose samples of a metric in a window are
// above a threshold.
type MetricBreach struct {
	AgentID string
	Samples int64   // samples of the metric in the window
	Min     float64 `gorm:"column:min_v"`
	Max     float64 `gorm:"column:max_v"`
}

// MetricAbove returns the agents that reported metric at least once in the
// window (from, to] and only values above threshold there, matching sel (nil:
// all), by id. Samples without the metric (or with a non-numeric value) are
// ignored. The window is a plain range on ts, served by telemetry_ts_idx.
func (s *Store) MetricAbove(ctx context.Context, metric string, threshold float64, from, to time.Time, sel *Selector) ([]MetricBreach, error) {
	if !metricPattern.MatchString(metric) {
		return nil, fmt.Errorf("metric above: invalid metric name %q", metric)
	}
	value, args := s.dialect.metricValue(metric)
	args = append(args, from.UTC(), to.UTC(), threshold)
	sql := `SELECT agent_id, count(*) AS samples, min(v) AS min_v, max(v) AS max_v
FROM (SELECT agent_id, ` + value + ` AS v FROM telemetry WHERE ts > ? AND ts <= ?) s
WHERE v IS NOT NULL
GROUP BY agent_id
HAVING min(v) > ?
ORDER BY agent_id`
	var rows []MetricBreach
	if err := s.db.WithContext(ctx).Raw(sql, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("evaluating metric threshold: %w", err)
	}
	if sel.Empty() || len(rows) == 0 {
		return rows, nil
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.AgentID
	}
	ok, err := s.agentsMatching(ctx, sel, ids)
	if err != nil {
		return nil, err
	}
	out := rows[:0]
	for _, r := range rows {
		if ok[r.AgentID] {
			out = append(out, r)
		}
	}
	return out, nil
}

// agentsMatching returns which of ids are registered agents matching sel.
func (s *Store) agentsMatching(ctx context.Context, sel *Selector, all []string) (map[string]bool, error) {
	out := make(map[string]bool, len(all))
	for start := 0; start < len(all); start += 1000 {
		chunk := all[start:min(start+1000, len(all))]
		var rows []agentRow
		if err := s.db.WithContext(ctx).Model(&Agent{}).Select("id", "site", "capabilities", "labels", "last_seen_at", "updated_at").
			Where("id IN ?", chunk).Scan(&rows).Error; err != nil {
			return nil, fmt.Errorf("matching agents: %w", err)
		}
		for _, r := range rows {
			if sel.matches(r.agent()) {
				out[r.ID] = true
			}
		}
	}
	return out, nil
}

// FailureStats counts executions that finished in a window.
type FailureStats struct {
	Finished int64 // every execution with finished_at in the window
	Failed   int64 // of those, failed or timed_out
}

// CommandFailureStats counts the executions that finished in (from, to].
func (s *Store) CommandFailureStats(ctx context.Context, from, to time.Time) (FailureStats, error) {
	var st FailureStats
	err := s.db.WithContext(ctx).Raw(`SELECT count(*) AS finished,
  coalesce(sum(CASE WHEN status IN (?, ?) THEN 1 ELSE 0 END), 0) AS failed
FROM executions WHERE finished_at > ? AND finished_at <= ?`, ExecFailed, ExecTimedOut, from.UTC(), to.UTC()).Scan(&st).Error
	if err != nil {
		return st, fmt.Errorf("counting finished executions: %w", err)
	}
	return st, nil
}

// NewWebhook is what CreateWebhook needs.
type NewWebhook struct {
	URL       string
	Secret    string
	Enabled   bool
	CreatedBy string
	Audit     AuditEvent // written in the same transaction; Target is set to the webhook id
}

// CreateWebhook stores a webhook (with its audit event). More than
// MaxWebhooks gives ErrLimitReached. The caller validates the URL and secret.
func (s *Store) CreateWebhook(ctx context.Context, nw NewWebhook) (Webhook, error) {
	if nw.URL == "" || nw.Secret == "" {
		return Webhook{}, ValidationErrors{{Field: "url", Message: "url and secret are required"}}
	}
	now := time.Now().UTC()
	w := Webhook{ID: uuid.NewString(), URL: nw.URL, Secret: nw.Secret, Enabled: nw.Enabled, CreatedBy: nw.CreatedBy, CreatedAt: now}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&Webhook{}).Count(&n).Error; err != nil {
			return fmt.Errorf("counting webhooks: %w", err)
		}
		if n >= MaxWebhooks {
			return fmt.Errorf("%w: at most %d webhooks", ErrLimitReached, MaxWebhooks)
		}
		if err := tx.Create(&w).Error; err != nil {
			return fmt.Errorf("inserting webhook: %w", err)
		}
		return s.insertAudit(tx, nw.Audit, w.ID, now)
	})
	if err != nil {
		return Webhook{}, err
	}
	return w, nil
}

// ListWebhooks lists webhooks oldest first.
func (s *Store) ListWebhooks(ctx context.Context, p Page) ([]Webhook, string, error) {
	q, err := keyset(s.db.WithContext(ctx).Model(&Webhook{}), p, "created_at", false)
	if err != nil {
		return nil, "", err
	}
	var rows []Webhook
	if err := q.Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing webhooks: %w", err)
	}
	rows, next := nextCursor(rows, p, func(w Webhook) (time.Time, string) { return w.CreatedAt, w.ID })
	return rows, next, nil
}

// GetWebhook returns one webhook or ErrNotFound.
func (s *Store) GetWebhook(ctx context.Context, id string) (Webhook, error) {
	var w Webhook
	res := s.db.WithContext(ctx).Where("id = ?", id).Limit(1).Find(&w)
	if res.Error != nil {
		return w, fmt.Errorf("getting webhook: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return w, ErrNotFound
	}
	return w, nil
}

// DeleteWebhook deletes a webhook and its delivery log. Unknown ids give ErrNotFound.
func (s *Store) DeleteWebhook(ctx context.Context, id string, audit AuditEvent) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&Webhook{}).Where("id = ?", id).Count(&n).Error; err != nil {
			return fmt.Errorf("reading webhook: %w", err)
		}
		if n == 0 {
			return ErrNotFound
		}
		if err := tx.Where("webhook_id = ?", id).Delete(&WebhookDelivery{}).Error; err != nil {
			return fmt.Errorf("deleting deliveries of webhook: %w", err)
		}
		if err := tx.Where("id = ?", id).Delete(&Webhook{}).Error; err != nil {
			return fmt.Errorf("deleting webhook: %w", err)
		}
		return s.insertAudit(tx, audit, id, time.Now().UTC())
	})
}

// DeliveryFilter selects deliveries of one webhook, newest first.
type DeliveryFilter struct {
	WebhookID string
	Page
}

// ListDeliveries lists a webhook's deliveries newest first.
func (s *Store) ListDeliveries(ctx context.Context, f DeliveryFilter) ([]WebhookDelivery, string, error) {
	q, err := keyset(s.db.WithContext(ctx).Model(&WebhookDelivery{}).Where("webhook_id = ?", f.WebhookID), f.Page, "created_at", true)
	if err != nil {
		return nil, "", err
	}
	var rows []WebhookDelivery
	if err := q.Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing deliveries: %w", err)
	}
	rows, next := nextCursor(rows, f.Page, func(d WebhookDelivery) (time.Time, string) { return d.CreatedAt, d.ID })
	return rows, next, nil
}

// PendingDelivery is a claimed delivery with where and how to send it.
type PendingDelivery struct {
	WebhookDelivery
	URL    string
	Secret string
}

// ClaimDeliveries claims up to limit pending deliveries, oldest first, whose
// lease is free, leasing them until now+lease so that another claimer (a
// second scheduler during a leader change) skips them; a claimer that dies
// leaves them to be claimed again when the lease ends (at-least-once).
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]PendingDelivery, error) {
	now = now.UTC()
	if limit <= 0 {
		return nil, nil
	}
	var out []PendingDelivery
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		q := tx.Model(&WebhookDelivery{}).Where("status = ? AND (claimed_until IS NULL OR claimed_until < ?)", DeliveryPending, now).
			Order("created_at").Order("id").Limit(limit)
		q = s.dialect.skipLocked(q)
		var ids []string
		if err := q.Pluck("id", &ids).Error; err != nil {
			return fmt.Errorf("claiming deliveries: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		if err := tx.Model(&WebhookDelivery{}).Where("id IN ?", ids).
			Updates(map[string]any{"claimed_until": now.Add(lease), "updated_at": now}).Error; err != nil {
			return fmt.Errorf("leasing deliveries: %w", err)
		}
		err := tx.Table("webhook_deliveries AS d").
			Select("d.*, w.url AS url, w.secret AS secret").
			Joins("JOIN webhooks w ON w.id = d.webhook_id").
			Where("d.id IN ?", ids).Order("d.created_at").Order("d.id").Scan(&out).Error
		if err != nil {
			return fmt.Errorf("reading claimed deliveries: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeliveryOutcome is the result of one attempt to send a delivery (with its
// retries).
type DeliveryOutcome struct {
	ID            string
	Status        string // DeliveryDelivered, DeliveryFailed, or DeliveryPending (interrupted; sent again later)
	Attempts      int    // HTTP attempts made this time (added to the row's count)
	LastError     string // without secrets
	ResponseCode  *int
	ResponseBody  string // truncated to MaxResponseBodySize bytes; empty unless kept
	ResponseBytes *int64 // size of the answer's body, up to MaxResponseRead
	At            time.Time
}

// RecordDelivery stores the outcome of sending a claimed delivery and frees
// its lease.
func (s *Store) RecordDelivery(ctx context.Context, o DeliveryOutcome) error {
	switch o.Status {
	case DeliveryDelivered, DeliveryFailed, DeliveryPending:
	default:
		return fmt.Errorf("recording delivery: invalid status %q", o.Status)
	}
	at := o.At.UTC()
	upd := map[string]any{
		"status": o.Status, "attempts": gorm.Expr("attempts + ?", o.Attempts),
		"last_error": cleanText(o.LastError, 1024), "response_code": o.ResponseCode,
		"response_body": cleanText(o.ResponseBody, MaxResponseBodySize), "response_bytes": o.ResponseBytes,
		"claimed_until": nil, "updated_at": at,
	}
	if o.Attempts > 0 {
		upd["last_attempt_at"] = at
	}
	if o.Status == DeliveryDelivered {
		upd["delivered_at"] = at
	}
	if err := s.db.WithContext(ctx).Model(&WebhookDelivery{}).Where("id = ?", o.ID).Updates(upd).Error; err != nil {
		return fmt.Errorf("recording delivery: %w", err)
	}
	return nil
}

// cleanText cuts s to at most n bytes of valid UTF-8 without NUL bytes (which
// Postgres text refuses).
func cleanText(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	s = strings.ToValidUTF8(s, "")
	return strings.ReplaceAll(s, "\x00", "")
}

// PruneAlertHistory deletes up to limit resolved alerts resolved before
// cutoff and up to limit finished deliveries last updated before it; it
// returns how many rows went.
func (s *Store) PruneAlertHistory(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	cutoff = cutoff.UTC()
	if limit <= 0 {
		limit = 10000
	}
	db := s.db.WithContext(ctx)
	a := db.Exec(`DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE resolved_at IS NOT NULL AND resolved_at < ? LIMIT ?)`, cutoff, limit)
	if a.Error != nil {
		return 0, fmt.Errorf("pruning alerts: %w", a.Error)
	}
	d := db.Exec(`DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries WHERE status <> ? AND updated_at < ? LIMIT ?)`, DeliveryPending, cutoff, limit)
	if d.Error != nil {
		return a.RowsAffected, fmt.Errorf("pruning deliveries: %w", d.Error)
	}
	return a.RowsAffected + d.RowsAffected, nil
}
