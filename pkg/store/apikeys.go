package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Bounds of API keys.
const (
	MaxAPIKeys       = 1000 // keys not revoked
	MaxAPIKeyNameLen = 128
)

// ErrUnknownAPIKey is returned for a key that is unknown, revoked or expired.
var ErrUnknownAPIKey = errors.New("unknown, revoked or expired API key")

// APIKey is a stored API key; the secret itself is kept only as a SHA-256 hash.
type APIKey struct {
	ID         string `gorm:"primaryKey"`
	Name       string `gorm:"not null"`
	Role       string `gorm:"not null"`
	KeyHash    string `gorm:"not null" json:"-"`
	Prefix     string `gorm:"not null"` // the first characters of the secret, to recognise it
	CreatedBy  string `gorm:"not null"`
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
	LastUsedAt *time.Time
}

// NewAPIKey is what CreateAPIKey needs.
type NewAPIKey struct {
	Name      string
	Role      string
	KeyHash   string
	Prefix    string
	CreatedBy string
	ExpiresAt *time.Time
	Audit     AuditEvent // written in the same transaction; Target is set to the key id
}

// CreateAPIKey stores a key (and its audit event); beyond MaxAPIKeys live keys
// it returns ErrLimitReached.
func (s *Store) CreateAPIKey(ctx context.Context, nk NewAPIKey) (APIKey, error) {
	now := time.Now().UTC()
	k := APIKey{ID: uuid.NewString(), Name: nk.Name, Role: nk.Role, KeyHash: nk.KeyHash, Prefix: nk.Prefix,
		CreatedBy: nk.CreatedBy, CreatedAt: now, ExpiresAt: utcPtr(nk.ExpiresAt)}
	err := createCapped(ctx, s, &k, "API key", MaxAPIKeys, nk.Audit, k.ID, now)
	if err != nil {
		return APIKey{}, err
	}
	return k, nil
}

// ListAPIKeys lists keys oldest first.
func (s *Store) ListAPIKeys(ctx context.Context, p Page) ([]APIKey, string, error) {
	return listOldestFirst(ctx, s.db, p, "API keys", func(k APIKey) (time.Time, string) { return k.CreatedAt, k.ID })
}

// RevokeAPIKey revokes a key (revoking it again changes nothing and writes no
// audit event); an unknown id gives ErrNotFound.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, audit AuditEvent) error {
	return revokeOnce[APIKey](ctx, s, id, "API key", audit)
}

// UseAPIKey returns the live key with this hash and records its use; an
// unknown, revoked or expired key gives ErrUnknownAPIKey.
func (s *Store) UseAPIKey(ctx context.Context, keyHash string, now time.Time) (APIKey, error) {
	var k APIKey
	res := s.db.WithContext(ctx).Where("key_hash = ?", keyHash).Limit(1).Find(&k)
	if res.Error != nil {
		return APIKey{}, fmt.Errorf("looking up API key: %w", res.Error)
	}
	if res.RowsAffected == 0 || k.RevokedAt != nil || (k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)) {
		return APIKey{}, ErrUnknownAPIKey
	}
	if err := s.db.WithContext(ctx).Model(&APIKey{}).Where("id = ?", k.ID).Update("last_used_at", now.UTC()).Error; err != nil {
		return APIKey{}, fmt.Errorf("recording API key use: %w", err)
	}
	return k, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// createCapped inserts row, with its audit event, unless max rows of its kind
// are live (not revoked) already: then ErrLimitReached.
func createCapped[T any](ctx context.Context, s *Store, row *T, what string, max int, audit AuditEvent, id string, now time.Time) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(new(T)).Where("revoked_at IS NULL").Count(&n).Error; err != nil {
			return fmt.Errorf("counting %ss: %w", what, err)
		}
		if n >= int64(max) {
			return ErrLimitReached
		}
		if err := tx.Create(row).Error; err != nil {
			return fmt.Errorf("inserting %s: %w", what, err)
		}
		return s.insertAudit(tx, audit, id, now)
	})
}

// revokeOnce sets revoked_at on the row with id and appends audit; revoking
// again changes nothing and writes no audit event; an unknown id gives ErrNotFound.
func revokeOnce[T any](ctx context.Context, s *Store, id, what string, audit AuditEvent) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		now := time.Now().UTC()
		res := tx.Model(new(T)).Where("id = ? AND revoked_at IS NULL", id).Update("revoked_at", now)
		if res.Error != nil {
			return fmt.Errorf("revoking %s: %w", what, res.Error)
		}
		if res.RowsAffected > 0 {
			return s.insertAudit(tx, audit, id, now)
		}
		var n int64
		if err := tx.Model(new(T)).Where("id = ?", id).Count(&n).Error; err != nil {
			return fmt.Errorf("revoking %s: %w", what, err)
		}
		if n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// listOldestFirst pages through a table by (created_at, id).
func listOldestFirst[T any](ctx context.Context, db *gorm.DB, p Page, what string, pos func(T) (time.Time, string)) ([]T, string, error) {
	q, err := keyset(db.WithContext(ctx).Model(new(T)), p, "created_at", false)
	if err != nil {
		return nil, "", err
	}
	var rows []T
	if err := q.Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing %s: %w", what, err)
	}
	rows, next := nextCursor(rows, p, pos)
	return rows, next, nil
}

// APIKeyRevoked reports whether the tokens exchanged for key id must be
// refused: the key is revoked, or unknown (keys are never deleted, so an
// unknown id was never issued here).
func (s *Store) APIKeyRevoked(ctx context.Context, id string) (bool, error) {
	var keys []APIKey
	if err := s.db.WithContext(ctx).Select("id", "revoked_at").Where("id = ?", id).Limit(1).Find(&keys).Error; err != nil {
		return false, fmt.Errorf("checking API key revocation: %w", err)
	}
	return len(keys) == 0 || keys[0].RevokedAt != nil, nil
}
