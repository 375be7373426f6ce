package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm/clause"
)

// ErrUnknownCredential is returned for a credential that is not (or no longer) valid.
var ErrUnknownCredential = errors.New("unknown or revoked agent credential")

// AgentCredential is an enrolled agent's credential, kept as a SHA-256 hash.
type AgentCredential struct {
	AgentID        string `gorm:"primaryKey"`
	CredentialHash string `gorm:"not null"`
	EnrolledAt     time.Time
	EnrolledFrom   string `gorm:"not null"`
	RevokedAt      *time.Time
	ImposedSite    *string   `gorm:"->"` // set by EnrollWithSecret; nil: nothing imposed
	ImposedLabels  StringMap `gorm:"->"`
}

// SetAgentCredential stores (or rotates) an agent's credential hash; the old
// credential stops working at once.
func (s *Store) SetAgentCredential(ctx context.Context, agentID, credentialHash, enrolledFrom string) error {
	c := AgentCredential{AgentID: agentID, CredentialHash: credentialHash, EnrolledAt: time.Now().UTC(), EnrolledFrom: enrolledFrom}
	err := s.db.WithContext(ctx).Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "agent_id"}},
		DoUpdates: clause.Assignments(map[string]any{"credential_hash": credentialHash, "enrolled_at": c.EnrolledAt, "enrolled_from": enrolledFrom, "revoked_at": nil}),
	}).Create(&c).Error
	if err != nil {
		return fmt.Errorf("storing agent credential: %w", err)
	}
	// Enrolling with the bootstrap secret lifts what a secret imposed.
	if err := s.db.WithContext(ctx).Exec(`UPDATE agent_credentials SET imposed_site = NULL, imposed_labels = NULL WHERE agent_id = ? AND imposed_site IS NOT NULL`, agentID).Error; err != nil {
		return fmt.Errorf("storing agent credential: %w", err)
	}
	return nil
}

// AgentForCredential returns the agent a credential hash belongs to.
func (s *Store) AgentForCredential(ctx context.Context, credentialHash string) (string, error) {
	var c AgentCredential
	res := s.db.WithContext(ctx).Where("credential_hash = ? AND revoked_at IS NULL", credentialHash).Limit(1).Find(&c)
	if res.Error != nil {
		return "", fmt.Errorf("looking up agent credential: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return "", ErrUnknownCredential
	}
	return c.AgentID, nil
}

// RevokeAgentCredential revokes an agent's credential; it reports whether there was one.
func (s *Store) RevokeAgentCredential(ctx context.Context, agentID string) (bool, error) {
	res := s.db.WithContext(ctx).Model(&AgentCredential{}).Where("agent_id = ? AND revoked_at IS NULL", agentID).Update("revoked_at", time.Now().UTC())
	if res.Error != nil {
		return false, fmt.Errorf("revoking agent credential: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}
