package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
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
	if s.dialect == Postgres {
		if err := s.copyTelemetry(ctx, samples); err != nil {
			return fmt.Errorf("inserting telemetry: %w", err)
		}
		return nil
	}
	if err := s.db.WithContext(ctx).CreateInBatches(samples, 500).Error; err != nil {
		return fmt.Errorf("inserting telemetry: %w", err)
	}
	return nil
}

var telemetryColumns = []string{"agent_id", "ts", "metrics", "received_at"}

// copyTelemetry streams samples with COPY FROM over one pooled connection.
func (s *Store) copyTelemetry(ctx context.Context, samples []TelemetrySample) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		c, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return errors.New("the postgres driver is not pgx")
		}
		n, err := c.Conn().CopyFrom(ctx, pgx.Identifier{"telemetry"}, telemetryColumns,
			pgx.CopyFromSlice(len(samples), func(i int) ([]any, error) {
				t := samples[i]
				return []any{t.AgentID, t.TS.UTC(), []byte(t.Metrics), t.ReceivedAt.UTC()}, nil
			}))
		if err != nil {
			return err
		}
		if n != int64(len(samples)) {
			return fmt.Errorf("copied %d of %d rows", n, len(samples))
		}
		return nil
	})
}

// RecentTelemetry returns an agent's newest samples, newest first, at most limit.
func (s *Store) RecentTelemetry(ctx context.Context, agentID string, limit int) ([]TelemetrySample, error) {
	var out []TelemetrySample
	if err := s.db.WithContext(ctx).Where("agent_id = ?", agentID).Order("ts DESC").Limit(limit).Find(&out).Error; err != nil {
		return nil, fmt.Errorf("reading telemetry: %w", err)
	}
	return out, nil
}
