package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// matches reports whether an agent satisfies a selector (nil matches all).
func (s *Selector) matches(a Agent) bool {
	if s.Empty() {
		return true
	}
	if s.Site != "" && a.Site != s.Site {
		return false
	}
	if s.Capability != "" && !slices.Contains([]string(a.Capabilities), s.Capability) {
		return false
	}
	for k, v := range s.Labels {
		if a.Labels[k] != v {
			return false
		}
	}
	return true
}

// AgentSeen is an agent with the time it was last seen.
type AgentSeen struct {
	ID         string
	LastSeenAt time.Time
}

// agentRow reads the columns the rule queries need.
type agentRow struct {
	ID           string
	Site         string
	Capabilities StringList
	Labels       StringMap
	LastSeenAt   *time.Time
	UpdatedAt    time.Time
}

func (r agentRow) agent() Agent {
	return Agent{ID: r.ID, Site: r.Site, Capabilities: r.Capabilities, Labels: r.Labels}
}

func (r agentRow) seen() time.Time {
	if r.LastSeenAt != nil {
		return r.LastSeenAt.UTC()
	}
	return r.UpdatedAt.UTC()
}

// OfflineAgents returns the offline agents matching sel (nil: all) last seen
// before cutoff (last_seen_at, or updated_at when it was never seen), by id.
func (s *Store) OfflineAgents(ctx context.Context, sel *Selector, cutoff time.Time) ([]AgentSeen, error) {
	q := s.db.WithContext(ctx).Model(&Agent{}).Select("id", "site", "capabilities", "labels", "last_seen_at", "updated_at").
		Where("status = ? AND coalesce(last_seen_at, updated_at) < ?", AgentOffline, cutoff.UTC()).Order("id")
	if sel != nil && sel.Site != "" {
		q = q.Where("site = ?", sel.Site)
	}
	var rows []agentRow
	if err := q.Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("finding offline agents: %w", err)
	}
	out := make([]AgentSeen, 0, len(rows))
	for _, r := range rows {
		if sel.matches(r.agent()) {
			out = append(out, AgentSeen{ID: r.ID, LastSeenAt: r.seen()})
		}
	}
	return out, nil
}

// UnhealthyAgents returns the online agents matching sel (nil: all) whose
// latest heartbeat reported "unhealthy", by id.
func (s *Store) UnhealthyAgents(ctx context.Context, sel *Selector) ([]AgentSeen, error) {
	q := s.db.WithContext(ctx).Model(&Agent{}).Select("id", "site", "capabilities", "labels", "last_seen_at", "updated_at").
		Where("status = ? AND health_status = ?", AgentOnline, "unhealthy").Order("id")
	if sel != nil && sel.Site != "" {
		q = q.Where("site = ?", sel.Site)
	}
	var rows []agentRow
	if err := q.Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("finding unhealthy agents: %w", err)
	}
	out := make([]AgentSeen, 0, len(rows))
	for _, r := range rows {
		if sel.matches(r.agent()) {
			out = append(out, AgentSeen{ID: r.ID, LastSeenAt: r.seen()})
		}
	}
	return out, nil
}

// MetricBreach is an agent all of whose samples of a metric in a window are
// above a threshold.
type MetricBreach struct {
	AgentID string
	Samples int64   // samples of the metric in the window
	Min     float64 `gorm:"column:min_v"`
	Max     float64 `gorm:"column:max_v"`
}

// MetricAbove returns the agents that reported metric at least once in the
// window (from, to] and only values above threshold there, matching sel (nil:
// all), by id. Samples without the metric (or with a non-numeric value) are
// ignored. The window is a plain range on ts, served by telemetry_ts_idx.
func (s *Store) MetricAbove(ctx context.Context, metric string, threshold float64, from, to time.Time, sel *Selector) ([]MetricBreach, error) {
	if !metricPattern.MatchString(metric) {
		return nil, fmt.Errorf("metric above: invalid metric name %q", metric)
	}
	value, args := s.dialect.metricValue(metric)
	args = append(args, from.UTC(), to.UTC(), threshold)
	sql := `SELECT agent_id, count(*) AS samples, min(v) AS min_v, max(v) AS max_v
FROM (SELECT agent_id, ` + value + ` AS v FROM telemetry WHERE ts > ? AND ts <= ?) s
WHERE v IS NOT NULL
GROUP BY agent_id
HAVING min(v) > ?
ORDER BY agent_id`
	var rows []MetricBreach
	if err := s.db.WithContext(ctx).Raw(sql, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("evaluating metric threshold: %w", err)
	}
	if sel.Empty() || len(rows) == 0 {
		return rows, nil
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.AgentID
	}
	ok, err := s.agentsMatching(ctx, sel, ids)
	if err != nil {
		return nil, err
	}
	out := rows[:0]
	for _, r := range rows {
		if ok[r.AgentID] {
			out = append(out, r)
		}
	}
	return out, nil
}

// agentsMatching returns which of ids are registered agents matching sel.
func (s *Store) agentsMatching(ctx context.Context, sel *Selector, all []string) (map[string]bool, error) {
	out := make(map[string]bool, len(all))
	for start := 0; start < len(all); start += 1000 {
		chunk := all[start:min(start+1000, len(all))]
		var rows []agentRow
		if err := s.db.WithContext(ctx).Model(&Agent{}).Select("id", "site", "capabilities", "labels", "last_seen_at", "updated_at").
			Where("id IN ?", chunk).Scan(&rows).Error; err != nil {
			return nil, fmt.Errorf("matching agents: %w", err)
		}
		for _, r := range rows {
			if sel.matches(r.agent()) {
				out[r.ID] = true
			}
		}
	}
	return out, nil
}

// FailureStats counts executions that finished in a window.
type FailureStats struct {
	Finished int64 // every execution with finished_at in the window
	Failed   int64 // of those, failed or timed_out
}

// CommandFailureStats counts the executions that finished in (from, to].
func (s *Store) CommandFailureStats(ctx context.Context, from, to time.Time) (FailureStats, error) {
	var st FailureStats
	err := s.db.WithContext(ctx).Raw(`SELECT count(*) AS finished,
  coalesce(sum(CASE WHEN status IN (?, ?) THEN 1 ELSE 0 END), 0) AS failed
FROM executions WHERE finished_at > ? AND finished_at <= ?`, ExecFailed, ExecTimedOut, from.UTC(), to.UTC()).Scan(&st).Error
	if err != nil {
		return st, fmt.Errorf("counting finished executions: %w", err)
	}
	return st, nil
}
