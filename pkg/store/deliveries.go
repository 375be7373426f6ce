package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

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
