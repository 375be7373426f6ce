package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// AgentSession describes an agent that has just completed its HELLO; Site,
// Capabilities and Labels are what it claims.
type AgentSession struct {
	ID           string
	Site         string
	Version      string
	Hostname     string
	OS           string
	Arch         string
	Capabilities []string
	Labels       map[string]string
	GatewayID    string
	SessionID    string
	At           time.Time
	// TrustReported takes the claimed site and labels as trusted when neither
	// an enrollment secret nor an admin fixed them (trust_reported_attributes;
	// unsafe: anyone who can enroll can then claim any site).
	TrustReported bool
}

// MarkAgentOnline registers (or updates) an agent as online on a gateway session.
func (s *Store) MarkAgentOnline(ctx context.Context, a AgentSession) error {
	return s.MarkAgentsOnline(ctx, []AgentSession{a})
}

// MarkAgentOffline marks the agent offline if sessionID is still its current
// session (a newer session elsewhere must not be overwritten). It reports whether
// the agent was marked.
func (s *Store) MarkAgentOffline(ctx context.Context, agentID, sessionID string, at time.Time) (bool, error) {
	res := s.db.WithContext(ctx).Model(&Agent{}).
		Where("id = ? AND session_id = ?", agentID, sessionID).
		Updates(map[string]any{"status": AgentOffline, "last_seen_at": at.UTC(), "updated_at": at.UTC()})
	if res.Error != nil {
		return false, fmt.Errorf("marking agent offline: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}

// MarkGatewayAgentsOffline marks every agent still recorded on gatewayID offline
// (a gateway shutting down or found dead). It returns how many were marked.
func (s *Store) MarkGatewayAgentsOffline(ctx context.Context, gatewayID string, at time.Time) (int64, error) {
	res := s.db.WithContext(ctx).Model(&Agent{}).
		Where("gateway_id = ? AND status = ?", gatewayID, AgentOnline).
		Updates(map[string]any{"status": AgentOffline, "updated_at": at.UTC()})
	if res.Error != nil {
		return 0, fmt.Errorf("marking gateway agents offline: %w", res.Error)
	}
	return res.RowsAffected, nil
}

// HealthUpdate is the latest heartbeat of one agent.
type HealthUpdate struct {
	AgentID string
	Status  string
	UptimeS int64
	At      time.Time
}

// TouchAgents writes a batch of heartbeats: last_seen_at, health and uptime.
// Gateways call it periodically with the newest heartbeat per agent, so Postgres
// sees O(agents/flush) writes, not one per heartbeat.
func (s *Store) TouchAgents(ctx context.Context, ups []HealthUpdate) error {
	if len(ups) == 0 {
		return nil
	}
	const chunk = 1000
	for start := 0; start < len(ups); start += chunk {
		batch := ups[start:min(start+chunk, len(ups))]
		if err := s.dialect.touchAgents(ctx, s.db, batch); err != nil {
			return fmt.Errorf("touching agents: %w", err)
		}
	}
	return nil
}

// AgentFilter selects agents to list; every set field must match.
type AgentFilter struct {
	Status     string
	Site       string
	Labels     map[string]string // every label must be present with this value
	Capability string
	IDPrefix   string // ids starting with this
	Limit      int
	After      string // cursor: list ids greater than this
}

// ErrTooManyLabels is returned when a change would leave an agent with more
// labels than AttributesPatch.MaxLabels.
var ErrTooManyLabels = errors.New("too many labels")

// AttributesPatch changes an agent's trusted site and labels (a JSON merge
// patch): a nil Site keeps it; a label with a nil value is removed, others are
// set, labels not named are kept.
type AttributesPatch struct {
	Site   *string
	Labels map[string]*string
	// ClearLabels removes every label before Labels apply.
	ClearLabels bool
	MaxLabels   int        // bound on the labels the agent ends up with
	Audit       AuditEvent // written in the same transaction with before and after; Target is the agent id
}

// AgentAttributes are an agent's trusted site and labels.
type AgentAttributes struct {
	Site   string            `json:"site"`
	Labels map[string]string `json:"labels"`
}

// PatchAgentAttributes applies p to the agent's trusted attributes, which an
// admin then holds (its HELLOs no longer change them; a new enrollment does),
// and audits the change. It returns the agent as changed; an unknown agent
// gives ErrNotFound, too many labels ErrTooManyLabels.
func (s *Store) PatchAgentAttributes(ctx context.Context, id string, p AttributesPatch) (Agent, error) {
	var a Agent
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Limit(1).Find(&a)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		before := AgentAttributes{Site: a.Site, Labels: maps.Clone(map[string]string(a.Labels))}
		if before.Labels == nil {
			before.Labels = map[string]string{}
		}
		after := AgentAttributes{Site: before.Site, Labels: maps.Clone(before.Labels)}
		if p.ClearLabels {
			clear(after.Labels)
		}
		if p.Site != nil {
			after.Site = *p.Site
		}
		for k, v := range p.Labels {
			if v == nil {
				delete(after.Labels, k)
			} else {
				after.Labels[k] = *v
			}
		}
		if len(after.Labels) > p.MaxLabels {
			return ErrTooManyLabels
		}
		now := time.Now().UTC()
		a.Site, a.Labels, a.AttributesSource, a.UpdatedAt = after.Site, StringMap(after.Labels), AttributesFromAdmin, now
		err := tx.Model(&Agent{}).Where("id = ?", id).Updates(map[string]any{"site": a.Site, "labels": a.Labels,
			"attributes_source": a.AttributesSource, "updated_at": now}).Error
		if err != nil {
			return err
		}
		audit := p.Audit
		audit.Details, _ = json.Marshal(map[string]any{"before": before, "after": after}) // strings only: cannot fail
		return s.insertAudit(tx, audit, id, now)
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrTooManyLabels):
		return Agent{}, err
	case err != nil:
		return Agent{}, fmt.Errorf("patching agent attributes: %w", err)
	}
	return a, nil
}
