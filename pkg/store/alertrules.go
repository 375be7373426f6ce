package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// NewAlertRule is what CreateAlertRule needs.
type NewAlertRule struct {
	Name      string
	Kind      string
	Params    JSON
	Enabled   bool
	CreatedBy string
	Audit     AuditEvent // written in the same transaction; Target is set to the rule id
}

// CreateAlertRule stores a rule (with its audit event): a taken name gives
// ErrDuplicate, more than MaxAlertRules rules ErrLimitReached. The caller
// validates the name and the params (alert.CheckRule) and passes the
// normalized params.
func (s *Store) CreateAlertRule(ctx context.Context, nr NewAlertRule) (AlertRule, error) {
	now := time.Now().UTC()
	rule := AlertRule{
		ID: uuid.NewString(), Name: nr.Name, Kind: nr.Kind, Params: nr.Params, Enabled: nr.Enabled,
		CreatedBy: nr.CreatedBy, CreatedAt: now, UpdatedAt: now,
	}
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
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
