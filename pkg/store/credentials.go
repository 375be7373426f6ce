package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"gorm.io/gorm"
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
	// AllowedCapabilities is set by EnrollWithSecret; nil: any.
	AllowedCapabilities *StringList `gorm:"->"`
}

// SetAgentCredential stores (or rotates) an agent's credential hash; the old
// credential stops working at once.
func (s *Store) SetAgentCredential(ctx context.Context, agentID, credentialHash, enrolledFrom string) error {
	return s.SetAgentCredentials(ctx, []CredentialGrant{{AgentID: agentID, CredentialHash: credentialHash, EnrolledFrom: enrolledFrom}})
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

// CredentialGrant is one enrollment's new credential.
type CredentialGrant struct {
	AgentID        string
	CredentialHash string
	EnrolledFrom   string
}

// SetAgentCredentials stores (or rotates) a batch of credentials in one
// statement. When the batch holds several grants for one agent, the last wins,
// as if they had been stored one after the other. Such an enrollment fixes no
// attributes: what an earlier enrollment or an admin set is lifted, the agent
// has site "" and no labels until an admin sets them (or its HELLO does,
// under trust_reported_attributes).
func (s *Store) SetAgentCredentials(ctx context.Context, gs []CredentialGrant) error {
	if len(gs) == 0 {
		return nil
	}
	now := time.Now().UTC()
	pos := make(map[string]int, len(gs))
	rows := make([]AgentCredential, 0, len(gs))
	for _, g := range gs {
		c := AgentCredential{AgentID: g.AgentID, CredentialHash: g.CredentialHash, EnrolledAt: now, EnrolledFrom: g.EnrolledFrom}
		if i, ok := pos[g.AgentID]; ok {
			rows[i] = c // Postgres refuses to update a row twice in one statement
			continue
		}
		pos[g.AgentID] = len(rows)
		rows = append(rows, c)
	}
	ids := slices.Collect(maps.Keys(pos))
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		err := tx.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "agent_id"}},
			DoUpdates: clause.Assignments(map[string]any{"credential_hash": clause.Column{Table: "excluded", Name: "credential_hash"}, "enrolled_at": clause.Column{Table: "excluded", Name: "enrolled_at"}, "enrolled_from": clause.Column{Table: "excluded", Name: "enrolled_from"}, "revoked_at": nil,
				// Enrolling with the bootstrap secret lifts what a stored secret imposed.
				"imposed_site": nil, "imposed_labels": nil, "allowed_capabilities": nil}),
		}).CreateInBatches(&rows, 500).Error
		if err != nil {
			return err
		}
		// ... and what was fixed on the agent itself; capabilities are again
		// all it reports.
		return tx.Model(&Agent{}).Where("id IN ?", ids).Updates(map[string]any{"site": "", "labels": StringMap{},
			"capabilities": gorm.Expr("reported_capabilities"), "attributes_source": AttributesFromNothing, "updated_at": now}).Error
	})
	if err != nil {
		return fmt.Errorf("storing agent credentials: %w", err)
	}
	return nil
}
