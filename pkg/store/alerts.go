package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

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
	MaxResponseBodySize = 512      // bytes of a receiver's response body kept in the log (when configured)
	MaxResponseRead     = 64 << 10 // bytes of a receiver's response body read (and counted)
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
	Params    JSON   `gorm:"type:jsonb;not null"` // normalized by alert.ParseParams
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
