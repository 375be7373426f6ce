package store

import (
	"context"
	"database/sql"
	"fmt"

	"gorm.io/gorm"
)

// The agent reads (the API's list and detail) scan their rows by hand, column
// by column into Agent, instead of through GORM's reflective Scan, which cost
// more than the query itself.

// agentColumns are the columns scanAgent reads, in its order.
const agentColumns = `id, status, site, version, hostname, os, arch, capabilities, labels, gateway_id, session_id,
health_status, uptime_s, connected_at, last_seen_at, created_at, updated_at,
reported_site, reported_labels, reported_capabilities, attributes_source`

// ListAgents returns agents ordered by id, at most f.Limit.
func (s *Store) ListAgents(ctx context.Context, f AgentFilter) ([]Agent, error) {
	q := s.db.WithContext(ctx).Model(&Agent{}).Select(agentColumns).Order("id").Limit(f.Limit)
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.After != "" {
		q = q.Where("id > ?", f.After)
	}
	out, err := queryAgents(s.agentAttributes(q, f), max(f.Limit, 0))
	if err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	return out, nil
}

// GetAgent returns one agent or ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (Agent, error) {
	q := s.db.WithContext(ctx).Model(&Agent{}).Select(agentColumns).Where("id = ?", id).Limit(1)
	out, err := queryAgents(q, 1)
	if err != nil {
		return Agent{}, fmt.Errorf("getting agent: %w", err)
	}
	if len(out) == 0 {
		return Agent{}, ErrNotFound
	}
	return out[0], nil
}

// queryAgents runs q, which selects agentColumns, and scans its rows; sizeHint
// is the number of rows expected at most.
func queryAgents(q *gorm.DB, sizeHint int) ([]Agent, error) {
	rows, err := q.Rows()
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	out := make([]Agent, 0, min(sizeHint, 1000))
	for rows.Next() {
		out = append(out, Agent{})
		if err := scanAgent(rows, &out[len(out)-1]); err != nil {
			return nil, err
		}
	}
	return out, rows.Err()
}

// scanAgent reads one row of agentColumns into a.
func scanAgent(rows *sql.Rows, a *Agent) error {
	var connected, seen sql.NullTime
	err := rows.Scan(&a.ID, &a.Status, &a.Site, &a.Version, &a.Hostname, &a.OS, &a.Arch, &a.Capabilities, &a.Labels,
		&a.GatewayID, &a.SessionID, &a.HealthStatus, &a.UptimeS, &connected, &seen, &a.CreatedAt, &a.UpdatedAt,
		&a.ReportedSite, &a.ReportedLabels, &a.ReportedCapabilities, &a.AttributesSource)
	if err != nil {
		return fmt.Errorf("scanning agent: %w", err)
	}
	if connected.Valid {
		a.ConnectedAt = &connected.Time
	}
	if seen.Valid {
		a.LastSeenAt = &seen.Time
	}
	return nil
}
