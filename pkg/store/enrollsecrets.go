package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Bounds of enrollment secrets.
const (
	MaxEnrollmentSecrets = 1000 // secrets not revoked
	MaxEnrollmentNameLen = 128
)

// ErrUnknownEnrollmentSecret is returned for a secret that is unknown,
// revoked, expired or used up.
var ErrUnknownEnrollmentSecret = errors.New("unknown, revoked, expired or used-up enrollment secret")

// EnrollmentSecret is a stored enrollment secret (kept as a SHA-256 hash).
// Agents that enroll with it get its Site and Labels imposed.
type EnrollmentSecret struct {
	ID         string    `gorm:"primaryKey"`
	Name       string    `gorm:"not null"`
	SecretHash string    `gorm:"not null" json:"-"`
	Site       string    `gorm:"not null"`
	Labels     StringMap `gorm:"type:jsonb;not null"`
	MaxUses    *int
	Uses       int    `gorm:"not null"`
	CreatedBy  string `gorm:"not null"`
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	RevokedAt  *time.Time
}

// NewEnrollmentSecret is what CreateEnrollmentSecret needs.
type NewEnrollmentSecret struct {
	Name       string
	SecretHash string
	Site       string
	Labels     map[string]string
	MaxUses    *int
	CreatedBy  string
	ExpiresAt  *time.Time
	Audit      AuditEvent // written in the same transaction; Target is set to the secret id
}

// CreateEnrollmentSecret stores a secret (and its audit event); beyond
// MaxEnrollmentSecrets live secrets it returns ErrLimitReached.
func (s *Store) CreateEnrollmentSecret(ctx context.Context, ns NewEnrollmentSecret) (EnrollmentSecret, error) {
	now := time.Now().UTC()
	e := EnrollmentSecret{ID: uuid.NewString(), Name: ns.Name, SecretHash: ns.SecretHash, Site: ns.Site, Labels: StringMap(ns.Labels),
		MaxUses: ns.MaxUses, CreatedBy: ns.CreatedBy, CreatedAt: now, ExpiresAt: utcPtr(ns.ExpiresAt)}
	if e.Labels == nil {
		e.Labels = StringMap{}
	}
	err := createCapped(ctx, s, &e, "enrollment secret", MaxEnrollmentSecrets, ns.Audit, e.ID, now)
	if err != nil {
		return EnrollmentSecret{}, err
	}
	return e, nil
}

// ListEnrollmentSecrets lists secrets oldest first.
func (s *Store) ListEnrollmentSecrets(ctx context.Context, p Page) ([]EnrollmentSecret, string, error) {
	return listOldestFirst(ctx, s.db, p, "enrollment secrets", func(e EnrollmentSecret) (time.Time, string) { return e.CreatedAt, e.ID })
}

// RevokeEnrollmentSecret revokes a secret (again: no change, no audit event);
// an unknown id gives ErrNotFound. Agents enrolled with it keep their credentials.
func (s *Store) RevokeEnrollmentSecret(ctx context.Context, id string, audit AuditEvent) error {
	return revokeOnce[EnrollmentSecret](ctx, s, id, "enrollment secret", audit)
}

// EnrollWithSecret spends one use of a live enrollment secret and stores (or
// rotates) the agent's credential with the secret's site and labels imposed,
// in one transaction: the use is counted atomically (a conditional UPDATE), so
// max_uses holds under concurrent enrollments. A secret that is unknown,
// revoked, expired or used up gives ErrUnknownEnrollmentSecret.
func (s *Store) EnrollWithSecret(ctx context.Context, secretHash, agentID, credentialHash string, now time.Time) (EnrollmentSecret, error) {
	now = now.UTC()
	var e EnrollmentSecret
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&EnrollmentSecret{}).
			Where("secret_hash = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) AND (max_uses IS NULL OR uses < max_uses)", secretHash, now).
			Update("uses", gorm.Expr("uses + 1"))
		if res.Error != nil {
			return fmt.Errorf("spending enrollment secret: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrUnknownEnrollmentSecret
		}
		if err := tx.Where("secret_hash = ?", secretHash).Take(&e).Error; err != nil {
			return fmt.Errorf("reading enrollment secret: %w", err)
		}
		labels := e.Labels
		if labels == nil {
			labels = StringMap{}
		}
		c := AgentCredential{AgentID: agentID, CredentialHash: credentialHash, EnrolledAt: now, EnrolledFrom: "secret:" + e.ID}
		err := tx.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "agent_id"}},
			DoUpdates: clause.Assignments(map[string]any{"credential_hash": credentialHash, "enrolled_at": now,
				"enrolled_from": c.EnrolledFrom, "revoked_at": nil}),
		}).Create(&c).Error
		if err != nil {
			return fmt.Errorf("storing agent credential: %w", err)
		}
		// The imposed columns are read-only in the model; write them directly.
		err = tx.Exec(`UPDATE agent_credentials SET imposed_site = ?, imposed_labels = ? WHERE agent_id = ?`, e.Site, labels, agentID).Error
		if err != nil {
			return fmt.Errorf("imposing site and labels: %w", err)
		}
		// Impose at once on an existing agent row too; later HELLOs keep it
		// (MarkAgentOnline reads the imposed values).
		if err := tx.Model(&Agent{}).Where("id = ?", agentID).Updates(map[string]any{"site": e.Site, "labels": labels}).Error; err != nil {
			return fmt.Errorf("imposing site and labels: %w", err)
		}
		return nil
	})
	if err != nil {
		return EnrollmentSecret{}, err
	}
	return e, nil
}

// imposedAttributes returns the site and labels that enrollment secrets
// impose on those of the agents that enrolled with one.
func imposedAttributes(tx *gorm.DB, agentIDs []string) (map[string]imposed, error) {
	var rows []struct {
		AgentID       string
		ImposedSite   *string
		ImposedLabels StringMap
	}
	err := tx.Model(&AgentCredential{}).Select("agent_id", "imposed_site", "imposed_labels").
		Where("agent_id IN ? AND revoked_at IS NULL AND imposed_site IS NOT NULL", agentIDs).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("reading imposed agent attributes: %w", err)
	}
	out := make(map[string]imposed, len(rows))
	for _, r := range rows {
		if r.ImposedSite == nil {
			continue
		}
		labels := r.ImposedLabels
		if labels == nil {
			labels = StringMap{}
		}
		out[r.AgentID] = imposed{site: *r.ImposedSite, labels: labels}
	}
	return out, nil
}

type imposed struct {
	site   string
	labels StringMap
}
