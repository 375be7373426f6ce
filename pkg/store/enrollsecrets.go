package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
)

// Bounds of enrollment secrets.
const (
	MaxEnrollmentSecrets = 1000 // secrets not revoked
	MaxEnrollmentNameLen = 128
	MaxAgentIDPatternLen = 256 // bytes of an agent_id_pattern
)

// CompileAgentIDPattern compiles an enrollment secret's agent_id_pattern: a Go
// regular expression (RE2 syntax) that must match the whole agent id. "" allows
// every id (nil is returned).
func CompileAgentIDPattern(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	if len(p) > MaxAgentIDPatternLen {
		return nil, fmt.Errorf("agent id pattern: at most %d bytes", MaxAgentIDPatternLen)
	}
	re, err := regexp.Compile(`^(?:` + p + `)$`)
	if err != nil {
		return nil, fmt.Errorf("agent id pattern: %w", err)
	}
	return re, nil
}

// ErrUnknownEnrollmentSecret is returned for a secret that is unknown,
// revoked, expired or used up.
var ErrUnknownEnrollmentSecret = errors.New("unknown, revoked, expired or used-up enrollment secret")

// EnrollmentSecret is a stored enrollment secret (kept as a SHA-256 hash).
// Agents that enroll with it get its Site and Labels as their trusted
// attributes, and are targeted only for the AllowedCapabilities (nil: any).
// It creates identities only for ids matching AgentIDPattern ("" every id),
// at most MaxAgents of them (nil: unbounded); Agents counts those it created.
type EnrollmentSecret struct {
	ID                  string      `gorm:"primaryKey"`
	Name                string      `gorm:"not null"`
	SecretHash          string      `gorm:"not null" json:"-"`
	Site                string      `gorm:"not null"`
	Labels              StringMap   `gorm:"type:jsonb;not null"`
	AllowedCapabilities *StringList `gorm:"type:jsonb"`
	AgentIDPattern      string      `gorm:"not null"`
	MaxAgents           *int
	Agents              int `gorm:"not null"`
	MaxUses             *int
	Uses                int    `gorm:"not null"`
	CreatedBy           string `gorm:"not null"`
	CreatedAt           time.Time
	ExpiresAt           *time.Time
	RevokedAt           *time.Time
}

// NewEnrollmentSecret is what CreateEnrollmentSecret needs.
type NewEnrollmentSecret struct {
	Name       string
	SecretHash string
	Site       string
	Labels     map[string]string
	// AllowedCapabilities restricts the capabilities its agents are targeted
	// for; nil: any they announce.
	AllowedCapabilities []string
	MaxUses             *int
	CreatedBy           string
	ExpiresAt           *time.Time
	Audit               AuditEvent // written in the same transaction; Target is set to the secret id

	AgentIDPattern string // see CompileAgentIDPattern; validated here too
	MaxAgents      *int
}

// CreateEnrollmentSecret stores a secret (and its audit event); beyond
// MaxEnrollmentSecrets live secrets it returns ErrLimitReached.
func (s *Store) CreateEnrollmentSecret(ctx context.Context, ns NewEnrollmentSecret) (EnrollmentSecret, error) {
	if _, err := CompileAgentIDPattern(ns.AgentIDPattern); err != nil {
		return EnrollmentSecret{}, err
	}
	now := time.Now().UTC()
	e := EnrollmentSecret{ID: uuid.NewString(), Name: ns.Name, SecretHash: ns.SecretHash, Site: ns.Site, Labels: StringMap(ns.Labels),
		AgentIDPattern: ns.AgentIDPattern, MaxAgents: ns.MaxAgents,
		MaxUses: ns.MaxUses, CreatedBy: ns.CreatedBy, CreatedAt: now, ExpiresAt: utcPtr(ns.ExpiresAt)}
	if ns.AllowedCapabilities != nil {
		allowed := StringList(ns.AllowedCapabilities)
		e.AllowedCapabilities = &allowed
	}
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

// EnrollWithSecret spends one use of a live enrollment secret and creates the
// agent's identity with the secret's site and labels imposed, in one
// transaction: uses and created identities are counted atomically
// (conditional UPDATEs), so max_uses and max_agents hold under concurrent
// enrollments. A secret that is unknown, revoked, expired or used up gives
// ErrUnknownEnrollmentSecret; an id outside its agent_id_pattern
// ErrAgentIDNotAllowed; beyond max_agents ErrMaxAgents; an id with a live
// identity ErrAgentEnrolled and a revoked one still blocked ErrAgentRevoked
// (enrolling never replaces an identity). A refusal spends no use.
func (s *Store) EnrollWithSecret(ctx context.Context, secretHash, agentID, credentialHash string, now time.Time) (EnrollmentSecret, error) {
	now = now.UTC()
	var e EnrollmentSecret
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The retry of an enrollment with this secret that succeeded (the
		// agent proposed the same credential and lost the answer) is answered
		// again without spending a use.
		found := tx.Where("secret_hash = ?", secretHash).Limit(1).Find(&e)
		if found.Error != nil {
			return fmt.Errorf("reading enrollment secret: %w", found.Error)
		}
		if found.RowsAffected == 0 {
			return ErrUnknownEnrollmentSecret
		}
		if ok, err := storedBy(tx, agentID, credentialHash, "secret:"+e.ID); err != nil || ok {
			return err
		}
		res := tx.Model(&EnrollmentSecret{}).
			Where("secret_hash = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) AND (max_uses IS NULL OR uses < max_uses)", secretHash, now).
			Update("uses", gorm.Expr("uses + 1"))
		if res.Error != nil {
			return fmt.Errorf("spending enrollment secret: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrUnknownEnrollmentSecret
		}
		e.Uses++ // the use just spent (the row was read before it)
		re, err := CompileAgentIDPattern(e.AgentIDPattern)
		if err != nil {
			return err
		}
		if re != nil && !re.MatchString(agentID) {
			return ErrAgentIDNotAllowed
		}
		spend := func() error {
			res := tx.Model(&EnrollmentSecret{}).Where("id = ? AND (max_agents IS NULL OR agents < max_agents)", e.ID).
				Update("agents", gorm.Expr("agents + 1"))
			if res.Error != nil {
				return fmt.Errorf("counting enrolled agents: %w", res.Error)
			}
			if res.RowsAffected == 0 {
				return ErrMaxAgents
			}
			return nil
		}
		if _, err := claimIdentity(tx, agentID, credentialHash, "secret:"+e.ID, now, spend); err != nil {
			return err
		}
		labels := e.Labels
		if labels == nil {
			labels = StringMap{}
		}
		// The enrollment columns are read-only in the model; write them directly.
		err = tx.Exec(`UPDATE agent_credentials SET imposed_site = ?, imposed_labels = ?, allowed_capabilities = ? WHERE agent_id = ?`,
			e.Site, labels, e.AllowedCapabilities, agentID).Error
		if err != nil {
			return fmt.Errorf("imposing site and labels: %w", err)
		}
		return fixAgentAttributes(tx, agentID, e.Site, labels, e.AllowedCapabilities, now)
	})
	if err != nil {
		return EnrollmentSecret{}, err
	}
	return e, nil
}

// fixAgentAttributes gives an existing agent row the trusted attributes of
// its new enrollment: the secret's site and labels, and the capabilities it
// reported that allowed permits (a new agent gets them at its first HELLO,
// from its credential).
func fixAgentAttributes(tx *gorm.DB, agentID, site string, labels StringMap, allowed *StringList, now time.Time) error {
	var a Agent
	res := tx.Select("id", "reported_capabilities").Where("id = ?", agentID).Limit(1).Find(&a)
	if res.Error != nil {
		return fmt.Errorf("fixing agent attributes: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return nil
	}
	err := tx.Model(&Agent{}).Where("id = ?", agentID).Updates(map[string]any{"site": site, "labels": labels,
		"capabilities": allowedCapabilities(a.ReportedCapabilities, allowed), "attributes_source": AttributesFromEnrollment, "updated_at": now}).Error
	if err != nil {
		return fmt.Errorf("fixing agent attributes: %w", err)
	}
	return nil
}

// allowedCapabilities returns the reported capabilities that allowed permits
// (all of them when allowed is nil), in their reported order.
func allowedCapabilities(reported []string, allowed *StringList) StringList {
	out := StringList{}
	for _, c := range reported {
		if allowed == nil || slices.Contains(*allowed, c) {
			out = append(out, c)
		}
	}
	return out
}

// enrollmentAttributes returns what the enrollment secrets of those of the
// agents that enrolled with one fixed: site and labels (site nil: none, the
// agent enrolled otherwise) and allowed capabilities (nil: any).
func enrollmentAttributes(tx *gorm.DB, agentIDs []string) (map[string]enrolled, error) {
	var rows []struct {
		AgentID             string
		ImposedSite         *string
		ImposedLabels       StringMap
		AllowedCapabilities *StringList
	}
	err := tx.Model(&AgentCredential{}).Select("agent_id", "imposed_site", "imposed_labels", "allowed_capabilities").
		Where("agent_id IN ? AND revoked_at IS NULL AND (imposed_site IS NOT NULL OR allowed_capabilities IS NOT NULL)", agentIDs).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("reading enrolled agent attributes: %w", err)
	}
	out := make(map[string]enrolled, len(rows))
	for _, r := range rows {
		labels := r.ImposedLabels
		if labels == nil {
			labels = StringMap{}
		}
		out[r.AgentID] = enrolled{site: r.ImposedSite, labels: labels, allowed: r.AllowedCapabilities}
	}
	return out, nil
}

type enrolled struct {
	site    *string
	labels  StringMap
	allowed *StringList
}
