package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// ReenrollSecretPrefix starts every re-enrollment secret, so a gateway tells
// it from an enrollment secret without a lookup.
const ReenrollSecretPrefix = "vwr_"

// ErrUnknownReenrollSecret is returned for a re-enrollment secret that is
// unknown, used, expired or issued for another agent id.
var ErrUnknownReenrollSecret = errors.New("unknown, used or expired re-enrollment secret")

// ReenrollSecret is a single-use secret an admin issued to re-enroll one
// agent id that has (or had) an identity, kept as a SHA-256 hash. Issuing
// another for the same id replaces it.
type ReenrollSecret struct {
	AgentID    string `gorm:"primaryKey"`
	SecretHash string `gorm:"not null"`
	CreatedBy  string `gorm:"not null"`
	CreatedAt  time.Time
	ExpiresAt  time.Time
}

// agentKnown reports whether id has an identity or an agent row.
func agentKnown(tx *gorm.DB, id string) (bool, error) {
	var n int64
	if err := tx.Model(&AgentCredential{}).Where("agent_id = ?", id).Count(&n).Error; err != nil {
		return false, fmt.Errorf("looking up agent: %w", err)
	}
	if n == 0 {
		if err := tx.Model(&Agent{}).Where("id = ?", id).Count(&n).Error; err != nil {
			return false, fmt.Errorf("looking up agent: %w", err)
		}
	}
	return n > 0, nil
}

// CreateReenrollSecret stores a re-enrollment secret for a known agent id
// (else ErrNotFound), replacing one issued before, with its audit event.
func (s *Store) CreateReenrollSecret(ctx context.Context, agentID, secretHash, createdBy string, expiresAt time.Time, audit AuditEvent) error {
	now := time.Now().UTC()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		ok, err := agentKnown(tx, agentID)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		r := ReenrollSecret{AgentID: agentID, SecretHash: secretHash, CreatedBy: createdBy, CreatedAt: now, ExpiresAt: expiresAt.UTC()}
		err = tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "agent_id"}}, UpdateAll: true}).Create(&r).Error
		if err != nil {
			return fmt.Errorf("storing re-enrollment secret: %w", err)
		}
		return s.insertAudit(tx, audit, agentID, now)
	})
}

// ReenrollAgent spends agentID's re-enrollment secret and gives the agent the
// credential credentialHash, whatever the state of its identity (live,
// revoked, blocked: the admin who issued the secret decided). Site and labels
// an enrollment secret imposed are kept.
func (s *Store) ReenrollAgent(ctx context.Context, agentID, secretHash, credentialHash string, now time.Time) error {
	now = now.UTC()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("agent_id = ? AND secret_hash = ? AND expires_at > ?", agentID, secretHash, now).Delete(&ReenrollSecret{})
		if res.Error != nil {
			return fmt.Errorf("spending re-enrollment secret: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			// The secret is spent; the retry of the enrollment that spent it
			// (the agent proposed the same credential and lost the answer) is
			// answered again.
			if ok, err := storedBy(tx, agentID, credentialHash, FromReenroll); err != nil || ok {
				return err
			}
			return ErrUnknownReenrollSecret
		}
		c := AgentCredential{AgentID: agentID, CredentialHash: credentialHash, EnrolledAt: now, EnrolledFrom: FromReenroll, CreatedWith: FromReenroll}
		err := tx.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "agent_id"}},
			DoUpdates: clause.Assignments(map[string]any{"credential_hash": credentialHash, "enrolled_at": now,
				"enrolled_from": FromReenroll, "revoked_at": nil, "enroll_blocked": false}),
		}).Create(&c).Error
		if err != nil {
			return fmt.Errorf("storing agent credential: %w", err)
		}
		return nil
	})
}

// ExecAgentRevoked is the error of the executions a revocation or a deletion cancelled.
const ExecAgentRevoked = "agent revoked"

// RevokeAgent revokes agentID's credential at once and blocks enrolling the id
// until UnrevokeAgent; its open executions end cancelled ("agent revoked") and
// their commands' aggregates are refreshed (and observed). It returns how many
// executions it cancelled; an unknown id gives ErrNotFound.
func (s *Store) RevokeAgent(ctx context.Context, agentID string, audit AuditEvent) (int, error) {
	return s.endAgent(ctx, agentID, audit, func(tx *gorm.DB, now time.Time) error {
		// An agent known only by its row (client certificates) gets a
		// credential row holding the block.
		c := AgentCredential{AgentID: agentID, CredentialHash: "revoked:" + agentID, EnrolledAt: now, EnrolledFrom: "", RevokedAt: &now, EnrollBlocked: true}
		err := tx.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "agent_id"}},
			DoUpdates: clause.Assignments(map[string]any{"revoked_at": now, "enroll_blocked": true}),
		}).Create(&c).Error
		if err != nil {
			return fmt.Errorf("revoking agent credential: %w", err)
		}
		return tx.Where("agent_id = ?", agentID).Delete(&ReenrollSecret{}).Error
	})
}

// DeleteAgent forgets agentID: its agent row, credential and re-enrollment
// secret; its open executions end cancelled. Finished history stays. The id
// may then be enrolled again as a new identity. Unknown: ErrNotFound.
func (s *Store) DeleteAgent(ctx context.Context, agentID string, audit AuditEvent) (int, error) {
	return s.endAgent(ctx, agentID, audit, func(tx *gorm.DB, _ time.Time) error {
		for _, m := range []any{&AgentCredential{}, &ReenrollSecret{}} {
			if err := tx.Where("agent_id = ?", agentID).Delete(m).Error; err != nil {
				return fmt.Errorf("forgetting agent: %w", err)
			}
		}
		if err := tx.Where("id = ?", agentID).Delete(&Agent{}).Error; err != nil {
			return fmt.Errorf("forgetting agent: %w", err)
		}
		return nil
	})
}

// endAgent runs change for a known agent, cancels its open executions and
// writes the audit event in one transaction, then refreshes the affected
// commands.
func (s *Store) endAgent(ctx context.Context, agentID string, audit AuditEvent, change func(tx *gorm.DB, now time.Time) error) (int, error) {
	now := time.Now().UTC()
	var commands []string
	var cancelled int64
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		ok, err := agentKnown(tx, agentID)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if err := change(tx, now); err != nil {
			return err
		}
		open := []string{ExecQueued, ExecRetrying, ExecDispatched, ExecRunning}
		if err := tx.Model(&Execution{}).Distinct("command_id").Where("agent_id = ? AND status IN ?", agentID, open).Pluck("command_id", &commands).Error; err != nil {
			return fmt.Errorf("finding the agent's executions: %w", err)
		}
		res := tx.Model(&Execution{}).Where("agent_id = ? AND status IN ?", agentID, open).
			Updates(map[string]any{"status": ExecCancelled, "error": ExecAgentRevoked, "finished_at": now, "updated_at": now})
		if res.Error != nil {
			return fmt.Errorf("cancelling the agent's executions: %w", res.Error)
		}
		cancelled = res.RowsAffected
		details, _ := json.Marshal(map[string]any{"cancelled_executions": cancelled})
		if len(audit.Details) == 0 || string(audit.Details) == "null" {
			audit.Details = details
		}
		return s.insertAudit(tx, audit, agentID, now)
	})
	if err != nil {
		return 0, err
	}
	return int(cancelled), s.RefreshCommands(ctx, commands)
}

// UnrevokeAgent lifts the enrollment block of a revoked agent: the id may be
// enrolled again (its old credential stays dead). An id that is not revoked
// and blocked gives ErrNotFound.
func (s *Store) UnrevokeAgent(ctx context.Context, agentID string, audit AuditEvent) error {
	now := time.Now().UTC()
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Model(&AgentCredential{}).Where("agent_id = ? AND enroll_blocked", agentID).Update("enroll_blocked", false)
		if res.Error != nil {
			return fmt.Errorf("lifting the enrollment block: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		return s.insertAudit(tx, audit, agentID, now)
	})
}
