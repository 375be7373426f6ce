package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// MarkAgentsOnline registers (or updates) a batch of agents as online in one
// statement. When the batch holds several sessions of one agent, the latest
// (by At, then by position) wins.
//
// What a session claims is stored as reported. The trusted site and labels are
// kept when an enrollment secret or an admin fixed them; else a new agent gets
// its enrollment secret's (from its credential), or, only with TrustReported,
// its claims, or nothing (site "", no labels). The trusted capabilities are
// the claimed ones that the agent's enrollment secret allows.
func (s *Store) MarkAgentsOnline(ctx context.Context, as []AgentSession) error {
	if len(as) == 0 {
		return nil
	}
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	fixed, err := enrollmentAttributes(s.db.WithContext(ctx), ids)
	if err != nil {
		return fmt.Errorf("marking agents online: %w", err)
	}
	latest := make(map[string]int, len(as))
	rows := make([]Agent, 0, len(as))
	for _, a := range as {
		at := a.At.UTC()
		row := Agent{
			ID: a.ID, Status: AgentOnline, Version: a.Version, Hostname: a.Hostname,
			OS: a.OS, Arch: a.Arch, Labels: StringMap{},
			GatewayID: a.GatewayID, SessionID: a.SessionID, HealthStatus: "",
			ConnectedAt: &at, LastSeenAt: &at, CreatedAt: at, UpdatedAt: at,
			ReportedSite: a.Site, ReportedLabels: a.Labels, ReportedCapabilities: a.Capabilities,
		}
		f, enrolledWithSecret := fixed[a.ID]
		row.Capabilities = allowedCapabilities(a.Capabilities, f.allowed)
		switch {
		case enrolledWithSecret && f.site != nil:
			row.Site, row.Labels, row.AttributesSource = *f.site, f.labels, AttributesFromEnrollment
		case a.TrustReported:
			row.Site, row.Labels, row.AttributesSource = a.Site, a.Labels, AttributesFromReported
		}
		// One row per agent: Postgres refuses to update a row twice in one statement.
		if i, ok := latest[a.ID]; ok {
			if !at.Before(*rows[i].ConnectedAt) {
				rows[i] = row
			}
			continue
		}
		latest[a.ID] = len(rows)
		rows = append(rows, row)
	}
	set := clause.AssignmentColumns([]string{
		"status", "version", "hostname", "os", "arch", "capabilities",
		"reported_site", "reported_labels", "reported_capabilities",
		"gateway_id", "session_id", "connected_at", "last_seen_at", "updated_at",
	})
	// Site and labels an enrollment or an admin fixed stay; a HELLO never changes them.
	for _, col := range []string{"site", "labels", "attributes_source"} {
		set = append(set, clause.Assignment{Column: clause.Column{Name: col}, Value: gorm.Expr(
			"CASE WHEN agents.attributes_source IN (?, ?) THEN agents."+col+" ELSE excluded."+col+" END",
			AttributesFromEnrollment, AttributesFromAdmin)})
	}
	err = s.db.WithContext(ctx).Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: set}).
		CreateInBatches(&rows, 500).Error
	if err != nil {
		return fmt.Errorf("marking agents online: %w", err)
	}
	return nil
}

// RecordAudits appends a batch of audit events to the chain in one transaction.
func (s *Store) RecordAudits(ctx context.Context, es []AuditEvent) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return s.appendAudits(tx, es) })
	if err != nil {
		return fmt.Errorf("recording audit events: %w", err)
	}
	return nil
}

// InsertTelemetry stores a batch of samples: with COPY on Postgres, with
// multi-row inserts on SQLite.
func (s *Store) InsertTelemetry(ctx context.Context, samples []TelemetrySample) error {
	if len(samples) == 0 {
		return nil
	}
	if err := s.dialect.insertTelemetry(ctx, s.db, samples); err != nil {
		return fmt.Errorf("inserting telemetry: %w", err)
	}
	return nil
}

// telemetryRows is a pgx.CopyFromSource over samples that reuses one row of
// values: pgx encodes each row before it asks for the next.
type telemetryRows struct {
	samples []TelemetrySample
	at      int
	row     [4]any
}

func (r *telemetryRows) Next() bool {
	r.at++
	return r.at < len(r.samples)
}

func (r *telemetryRows) Values() ([]any, error) {
	t := &r.samples[r.at]
	r.row = [4]any{t.AgentID, t.TS.UTC(), []byte(t.Metrics), t.ReceivedAt.UTC()}
	return r.row[:], nil
}

func (r *telemetryRows) Err() error { return nil }

// RecentTelemetry returns an agent's newest samples, newest first, at most limit.
func (s *Store) RecentTelemetry(ctx context.Context, agentID string, limit int) ([]TelemetrySample, error) {
	var out []TelemetrySample
	if err := s.db.WithContext(ctx).Where("agent_id = ?", agentID).Order("ts DESC").Limit(limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("reading telemetry: %w", err)
	}
	return out, nil
}
