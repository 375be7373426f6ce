package store

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// SigningKey is the public half of a command signing key, registered by the
// schedulers that sign with it so gateways can announce it in WELCOME.
type SigningKey struct {
	KeyID     string `gorm:"primaryKey"`
	PublicKey string `gorm:"not null"` // base64 of the 32 raw bytes
	CreatedAt time.Time
}

// RegisterSigningKey records a public key; registering it again makes it the
// newest (the one announced).
func (s *Store) RegisterSigningKey(ctx context.Context, keyID, publicKey string) error {
	k := SigningKey{KeyID: keyID, PublicKey: publicKey, CreatedAt: time.Now().UTC()}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "key_id"}},
		DoUpdates: clause.AssignmentColumns([]string{"public_key", "created_at"}),
	}).Create(&k).Error
	if err != nil {
		return fmt.Errorf("registering signing key: %w", err)
	}
	return nil
}

// SigningKeys returns the registered public keys, newest first.
func (s *Store) SigningKeys(ctx context.Context) ([]SigningKey, error) {
	var out []SigningKey
	if err := s.db.WithContext(ctx).Order("created_at DESC, key_id").Limit(16).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("listing signing keys: %w", err)
	}
	return out, nil
}
