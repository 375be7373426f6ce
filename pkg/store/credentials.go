package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// ErrUnknownCredential is returned for a credential that is not (or no longer) valid.
var ErrUnknownCredential = errors.New("unknown or revoked agent credential")

// Why an enrollment of an agent id is refused.
var (
	// ErrAgentEnrolled: the id has a live identity; it is re-enrolled only by
	// proving its current credential or with a re-enrollment secret.
	ErrAgentEnrolled = errors.New("agent id is already enrolled")
	// ErrAgentRevoked: an admin revoked the id; enrolling it is refused until
	// an admin lifts the block.
	ErrAgentRevoked = errors.New("agent id is revoked")
	// ErrAgentIDNotAllowed: the enrollment secret's agent_id_pattern does not match the id.
	ErrAgentIDNotAllowed = errors.New("agent id not allowed by this enrollment secret")
	// ErrMaxAgents: the secret has created as many identities as it may.
	ErrMaxAgents = errors.New("enrollment secret has created its maximum of agents")
)

// Enrolled-from values of agent credentials.
const (
	FromBootstrap = "bootstrap"
	FromRotation  = "rotation"
	FromReenroll  = "reenroll"
	bootstrapKey  = "bootstrap" // enrollment_counters row of the bootstrap secret
)

// AgentCredential is an enrolled agent's credential, kept as a SHA-256 hash.
// The row is the agent's identity: enrolling creates it, never replaces it.
type AgentCredential struct {
	AgentID        string `gorm:"primaryKey"`
	CredentialHash string `gorm:"not null"`
	EnrolledAt     time.Time
	EnrolledFrom   string `gorm:"not null"`
	CreatedWith    string `gorm:"not null"`
	RevokedAt      *time.Time
	EnrollBlocked  bool
	ImposedSite    *string   `gorm:"->"` // set by EnrollWithSecret; nil: nothing imposed
	ImposedLabels  StringMap `gorm:"->"`
	// AllowedCapabilities is set by EnrollWithSecret; nil: any.
	AllowedCapabilities *StringList `gorm:"->"`
}

// AgentForCredential returns the agent a credential hash belongs to.
func (s *Store) AgentForCredential(ctx context.Context, credentialHash string) (string, error) {
	ids, err := s.AgentsForCredentials(ctx, []string{credentialHash})
	if err != nil {
		return "", err
	}
	if ids[0] == "" {
		return "", ErrUnknownCredential
	}
	return ids[0], nil
}

// AgentsForCredentials looks a batch of credential hashes up in one query
// (a reconnect storm's upgrades): per hash, the agent it belongs to, or ""
// for one that is unknown or revoked.
func (s *Store) AgentsForCredentials(ctx context.Context, credentialHashes []string) ([]string, error) {
	ids := make([]string, len(credentialHashes))
	if len(credentialHashes) == 0 {
		return ids, nil
	}
	var rows []struct{ AgentID, CredentialHash string }
	err := s.db.WithContext(ctx).Model(&AgentCredential{}).Select("agent_id", "credential_hash").
		Where("credential_hash IN ? AND revoked_at IS NULL", credentialHashes).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("looking up agent credentials: %w", err)
	}
	byHash := make(map[string]string, len(rows))
	for _, r := range rows {
		byHash[r.CredentialHash] = r.AgentID
	}
	for i, h := range credentialHashes {
		ids[i] = byHash[h]
	}
	return ids, nil
}

// AgentEnrollBlocked reports whether an admin revoked agentID and has not
// lifted the block (for agents authenticated by client certificate).
func (s *Store) AgentEnrollBlocked(ctx context.Context, agentID string) (bool, error) {
	var n int64
	if err := s.db.WithContext(ctx).Model(&AgentCredential{}).Where("agent_id = ? AND enroll_blocked", agentID).Count(&n).Error; err != nil {
		return false, fmt.Errorf("looking up agent revocation: %w", err)
	}
	return n > 0, nil
}

// EnrollBootstrap creates the identity agentID with the bootstrap secret.
// maxAgents > 0 caps the identities the bootstrap secret creates (beyond:
// ErrMaxAgents). A live identity gives ErrAgentEnrolled, a revoked one still
// blocked ErrAgentRevoked; a revoked one whose block was lifted is enrolled
// again (without counting against the cap).
//
// An uncapped enrollment of a new id (a fleet's first start) is one
// statement; anything else takes the transaction that tells the cases apart.
func (s *Store) EnrollBootstrap(ctx context.Context, agentID, credentialHash string, maxAgents int, now time.Time) error {
	if maxAgents <= 0 {
		res := s.db.WithContext(ctx).Exec(`INSERT INTO agent_credentials (agent_id, credential_hash, enrolled_at, enrolled_from, created_with)
SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM agents WHERE id = ?)
  AND NOT EXISTS (SELECT 1 FROM agent_credentials WHERE agent_id = ? OR credential_hash = ?)
ON CONFLICT (agent_id) DO NOTHING`, agentID, credentialHash, now.UTC(), FromBootstrap, FromBootstrap, agentID, agentID, credentialHash)
		if res.Error != nil {
			return fmt.Errorf("storing agent credential: %w", res.Error)
		}
		if res.RowsAffected == 1 {
			return nil // a new identity: nothing imposed, no agent row to clear
		}
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		spend := func() error { return spendCounter(tx, bootstrapKey, maxAgents) }
		_, err := claimIdentity(tx, agentID, credentialHash, FromBootstrap, now, spend)
		if err != nil {
			return err
		}
		// Enrolling with the bootstrap secret fixes no attributes: the agent
		// has site "" and no labels until an admin sets them (or its HELLO
		// does, under trust_reported_attributes), and capabilities are again
		// all it reports.
		if err := tx.Exec(`UPDATE agent_credentials SET imposed_site = NULL, imposed_labels = NULL, allowed_capabilities = NULL WHERE agent_id = ?`, agentID).Error; err != nil {
			return fmt.Errorf("clearing imposed attributes: %w", err)
		}
		err = tx.Model(&Agent{}).Where("id = ?", agentID).Updates(map[string]any{"site": "", "labels": StringMap{},
			"capabilities": gorm.Expr("reported_capabilities"), "attributes_source": AttributesFromNothing, "updated_at": now.UTC()}).Error
		if err != nil {
			return fmt.Errorf("clearing trusted attributes: %w", err)
		}
		return nil
	})
}

// spendCounter counts one more identity created by the bootstrap secret,
// refusing beyond max (0: unlimited, nothing is counted).
func spendCounter(tx *gorm.DB, source string, max int) error {
	if max <= 0 {
		return nil
	}
	if err := tx.Exec(`INSERT INTO enrollment_counters (source, agents) VALUES (?, 0) ON CONFLICT (source) DO NOTHING`, source).Error; err != nil {
		return fmt.Errorf("counting enrolled agents: %w", err)
	}
	res := tx.Exec(`UPDATE enrollment_counters SET agents = agents + 1 WHERE source = ? AND agents < ?`, source, max)
	if res.Error != nil {
		return fmt.Errorf("counting enrolled agents: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return ErrMaxAgents
	}
	return nil
}

// storedBy reports whether agentID's live credential is credentialHash,
// stored by an enrollment of kind from: the retry of an enrollment that
// succeeded but whose answer the agent lost (it proposed the same credential,
// 256 random bits only it knows), to be answered again with nothing spent.
func storedBy(tx *gorm.DB, agentID, credentialHash, from string) (bool, error) {
	var n int64
	err := tx.Model(&AgentCredential{}).Where("agent_id = ? AND credential_hash = ? AND enrolled_from = ? AND revoked_at IS NULL",
		agentID, credentialHash, from).Count(&n).Error
	if err != nil {
		return false, fmt.Errorf("reading agent identity: %w", err)
	}
	return n > 0, nil
}

// claimIdentity stores a credential for agentID only when the id has no live
// identity: a new one (spend is called first, to count it against a cap) or
// one revoked whose block an admin lifted. It reports whether the identity is
// new. The conditional writes make it safe under concurrent enrollments of
// one id: exactly one wins, the others get ErrAgentEnrolled.
func claimIdentity(tx *gorm.DB, agentID, credentialHash, from string, now time.Time, spend func() error) (bool, error) {
	now = now.UTC()
	var cur AgentCredential
	res := tx.Select("agent_id", "credential_hash", "enrolled_from", "revoked_at", "enroll_blocked").Where("agent_id = ?", agentID).Limit(1).Find(&cur)
	if res.Error != nil {
		return false, fmt.Errorf("reading agent identity: %w", res.Error)
	}
	if res.RowsAffected > 0 {
		switch {
		case cur.RevokedAt == nil && cur.CredentialHash == credentialHash && cur.EnrolledFrom == from:
			return false, nil // a retry (see storedBy), read from the row at hand
		case cur.RevokedAt == nil:
			return false, ErrAgentEnrolled
		case cur.EnrollBlocked:
			return false, ErrAgentRevoked
		case cur.CredentialHash == credentialHash:
			// A revoked credential never becomes live again.
			return false, ErrAgentRevoked
		}
		up := tx.Model(&AgentCredential{}).Where("agent_id = ? AND revoked_at IS NOT NULL AND NOT enroll_blocked", agentID).
			Updates(map[string]any{"credential_hash": credentialHash, "enrolled_at": now, "enrolled_from": from, "revoked_at": nil})
		if up.Error != nil {
			return false, fmt.Errorf("storing agent credential: %w", up.Error)
		}
		if up.RowsAffected == 0 {
			return false, ErrAgentEnrolled // someone else won the race
		}
		return false, nil
	}
	// An agent known without a credential connects with a client certificate:
	// its id is taken as well.
	var n int64
	if err := tx.Model(&Agent{}).Where("id = ?", agentID).Count(&n).Error; err != nil {
		return false, fmt.Errorf("reading agent identity: %w", err)
	}
	if n > 0 {
		return false, ErrAgentEnrolled
	}
	if err := spend(); err != nil {
		return false, err
	}
	c := AgentCredential{AgentID: agentID, CredentialHash: credentialHash, EnrolledAt: now, EnrolledFrom: from, CreatedWith: from}
	ins := tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "agent_id"}}, DoNothing: true}).Create(&c)
	if ins.Error != nil {
		return false, fmt.Errorf("storing agent credential: %w", ins.Error)
	}
	if ins.RowsAffected == 0 {
		return false, ErrAgentEnrolled // someone else won the race (the spend is rolled back)
	}
	return true, nil
}

// RotateAgentCredential replaces the live credential currentHash of agentID
// by newHash (the agent proved it holds the current one). Site and labels an
// enrollment secret imposed are kept. A credential that is not agentID's live
// one gives ErrUnknownCredential.
func (s *Store) RotateAgentCredential(ctx context.Context, agentID, currentHash, newHash string, now time.Time) error {
	res := s.db.WithContext(ctx).Model(&AgentCredential{}).
		Where("agent_id = ? AND credential_hash = ? AND revoked_at IS NULL", agentID, currentHash).
		Updates(map[string]any{"credential_hash": newHash, "enrolled_at": now.UTC(), "enrolled_from": FromRotation})
	if res.Error != nil {
		return fmt.Errorf("rotating agent credential: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		// The retry of a rotation that succeeded (the agent proposed newHash's
		// credential and lost the answer) is answered again.
		if ok, err := storedBy(s.db.WithContext(ctx), agentID, newHash, FromRotation); err != nil || ok {
			return err
		}
		return ErrUnknownCredential
	}
	return nil
}
