package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// IdempotencyKey remembers the answer to one request made with an
// Idempotency-Key header, per principal. StatusCode 0 means the first request
// is still in flight.
type IdempotencyKey struct {
	Principal   string `gorm:"primaryKey"`
	Key         string `gorm:"column:idem_key;primaryKey"`
	RequestHash string `gorm:"not null"`
	StatusCode  int    `gorm:"not null"`
	Response    []byte
	Location    string `gorm:"not null"` // Location header of the answer
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

// BeginIdempotent claims (principal, key) for a request with requestHash. It
// returns claimed true when the caller must run the request (and then call
// CompleteIdempotent or AbandonIdempotent); otherwise the stored record, whose
// StatusCode is 0 while the first request is in flight. A unique key makes
// concurrent first requests claim it once. An expired record is replaced.
func (s *Store) BeginIdempotent(ctx context.Context, principal, key, requestHash string, ttl time.Duration) (IdempotencyKey, bool, error) {
	for attempt := 0; attempt < 3; attempt++ {
		now := time.Now().UTC()
		rec := IdempotencyKey{Principal: principal, Key: key, RequestHash: requestHash, CreatedAt: now, ExpiresAt: now.Add(ttl)}
		res := s.db.WithContext(ctx).Clauses(clause.OnConflict{DoNothing: true}).Create(&rec)
		if res.Error != nil {
			return IdempotencyKey{}, false, fmt.Errorf("claiming idempotency key: %w", res.Error)
		}
		if res.RowsAffected == 1 {
			return rec, true, nil
		}
		var cur IdempotencyKey
		err := s.db.WithContext(ctx).Where("principal = ? AND idem_key = ?", principal, key).Take(&cur).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			continue // purged in between
		}
		if err != nil {
			return IdempotencyKey{}, false, fmt.Errorf("reading idempotency key: %w", err)
		}
		if now.Before(cur.ExpiresAt) {
			return cur, false, nil
		}
		if err := s.db.WithContext(ctx).Where("principal = ? AND idem_key = ? AND expires_at <= ?", principal, key, now).Delete(&IdempotencyKey{}).Error; err != nil {
			return IdempotencyKey{}, false, fmt.Errorf("replacing expired idempotency key: %w", err)
		}
	}
	return IdempotencyKey{}, false, errors.New("claiming idempotency key: contended")
}

// CompleteIdempotent stores the answer of a claimed request.
func (s *Store) CompleteIdempotent(ctx context.Context, principal, key string, status int, location string, response []byte) error {
	err := s.db.WithContext(ctx).Model(&IdempotencyKey{}).Where("principal = ? AND idem_key = ?", principal, key).
		Updates(map[string]any{"status_code": status, "location": location, "response": response}).Error
	if err != nil {
		return fmt.Errorf("completing idempotency key: %w", err)
	}
	return nil
}

// AbandonIdempotent releases a claimed key whose request failed on the
// server's side, so that a retry runs it again.
func (s *Store) AbandonIdempotent(ctx context.Context, principal, key string) error {
	err := s.db.WithContext(ctx).Where("principal = ? AND idem_key = ? AND status_code = 0", principal, key).Delete(&IdempotencyKey{}).Error
	if err != nil {
		return fmt.Errorf("abandoning idempotency key: %w", err)
	}
	return nil
}

// DeleteIdempotencyKeysBefore purges keys expired before cutoff, in batches.
func (s *Store) DeleteIdempotencyKeysBefore(ctx context.Context, cutoff time.Time, maxBatches int) (int64, error) {
	row := s.dialect.rowID()
	q := `DELETE FROM idempotency_keys WHERE ` + row + ` IN (SELECT ` + row + ` FROM idempotency_keys WHERE expires_at < ? LIMIT ?)`
	return s.deleteBatches(ctx, maxBatches, "idempotency keys", func(db *gorm.DB) *gorm.DB { return db.Exec(q, cutoff.UTC(), retentionBatch) })
}
