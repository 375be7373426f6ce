package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

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
