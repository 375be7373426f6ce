package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	"gorm.io/gorm"
)

// agentAttributes applies the attribute filters of f (site, labels,
// capability, id prefix) to an agents query, in each dialect's JSON syntax.
func (s *Store) agentAttributes(q *gorm.DB, f AgentFilter) *gorm.DB {
	if f.Site != "" {
		q = q.Where("site = ?", f.Site)
	}
	return s.dialect.agentAttributes(q, f)
}

// Bounds of telemetry queries.
const (
	MaxTelemetryBuckets = 10_000  // buckets in one series
	MaxTelemetryPoints  = 200_000 // (bucket, metric) points in one answer
	MaxTelemetryMetrics = 32      // metrics named in one query
)

// Errors of telemetry queries.
var (
	ErrTooManyBuckets = errors.New("too many buckets")
	ErrTooManyPoints  = errors.New("too many points")
)

// TelemetryQuery asks for an agent's telemetry in [From, To), downsampled to
// buckets of Step starting at From.
type TelemetryQuery struct {
	AgentID string
	From    time.Time
	To      time.Time
	Step    time.Duration // whole seconds, at least one
	Metrics []string      // only these metrics (validated names); nil: every numeric metric
}

// Buckets is the number of buckets the query spans.
func (q TelemetryQuery) Buckets() int64 {
	if q.Step <= 0 || !q.To.After(q.From) {
		return 0
	}
	span := q.To.Sub(q.From)
	return int64((span + q.Step - 1) / q.Step)
}

// TelemetryPoint is one metric in one bucket.
type TelemetryPoint struct {
	Metric string
	Bucket int64 // bucket index: the bucket starts at From + Bucket×Step
	Avg    float64
	Max    float64
	Count  int64 // samples with the metric in the bucket
}

// metricPattern: metric names usable as a JSON key in both dialects' path syntax.
var metricPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$`)

// ValidMetricName reports whether name can be queried as a telemetry metric.
func ValidMetricName(name string) bool { return metricPattern.MatchString(name) }

// TelemetrySeries downsamples an agent's telemetry in SQL: the average and
// maximum of each numeric metric per bucket, ordered by metric and bucket.
// Buckets without samples are absent. The range scan walks
// telemetry_agent_ts_idx (agent_id, ts). More than MaxTelemetryBuckets buckets
// gives ErrTooManyBuckets, more than MaxTelemetryPoints points ErrTooManyPoints.
func (s *Store) TelemetrySeries(ctx context.Context, tq TelemetryQuery) ([]TelemetryPoint, error) {
	step := int64(tq.Step / time.Second)
	if step < 1 || tq.Step%time.Second != 0 {
		return nil, fmt.Errorf("telemetry series: step must be whole seconds, got %s", tq.Step)
	}
	if !tq.To.After(tq.From) {
		return nil, fmt.Errorf("telemetry series: empty range %s..%s", tq.From, tq.To)
	}
	if tq.Buckets() > MaxTelemetryBuckets {
		return nil, ErrTooManyBuckets
	}
	if len(tq.Metrics) > MaxTelemetryMetrics {
		return nil, fmt.Errorf("telemetry series: at most %d metrics", MaxTelemetryMetrics)
	}
	for _, m := range tq.Metrics {
		if !metricPattern.MatchString(m) {
			return nil, fmt.Errorf("telemetry series: invalid metric name %q", m)
		}
	}
	from, to := tq.From.UTC(), tq.To.UTC()
	sql, args := s.dialect.seriesSQL(tq.Metrics, from, step)
	args = append(args, tq.AgentID, from, to, MaxTelemetryPoints+1)
	var rows []TelemetryPoint
	if err := s.db.WithContext(ctx).Raw(sql, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("querying telemetry series: %w", err)
	}
	if len(rows) > MaxTelemetryPoints {
		return nil, ErrTooManyPoints
	}
	return rows, nil
}

// CommandFilter selects commands to list, newest first.
type CommandFilter struct {
	Status    string
	Verb      string
	AgentID   string // commands with an execution on this agent
	CreatedBy string
	From      time.Time // created at or after (zero: unbounded)
	To        time.Time // created before (zero: unbounded)
	Page
}

// ListCommands lists commands newest first (created_at, id), with the cursor
// of the next page ("" on the last).
func (s *Store) ListCommands(ctx context.Context, f CommandFilter) ([]Command, string, error) {
	q := s.db.WithContext(ctx).Model(&Command{})
	if f.Status != "" {
		q = q.Where("status = ?", f.Status)
	}
	if f.Verb != "" {
		q = q.Where("verb = ?", f.Verb)
	}
	if f.CreatedBy != "" {
		q = q.Where("created_by = ?", f.CreatedBy)
	}
	if f.AgentID != "" {
		q = q.Where("EXISTS (SELECT 1 FROM executions e WHERE e.command_id = commands.id AND e.agent_id = ?)", f.AgentID)
	}
	if !f.From.IsZero() {
		q = q.Where("created_at >= ?", f.From.UTC())
	}
	if !f.To.IsZero() {
		q = q.Where("created_at < ?", f.To.UTC())
	}
	q, err := keyset(q, f.Page, "created_at", true)
	if err != nil {
		return nil, "", err
	}
	var rows []Command
	if err := q.Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing commands: %w", err)
	}
	rows, next := nextCursor(rows, f.Page, func(c Command) (time.Time, string) { return c.CreatedAt, c.ID })
	return rows, next, nil
}

// ExecutionCounts counts the executions of each command by status.
func (s *Store) ExecutionCounts(ctx context.Context, commandIDs []string) (map[string]map[string]int, error) {
	out := make(map[string]map[string]int, len(commandIDs))
	for start := 0; start < len(commandIDs); start += 1000 {
		chunk := commandIDs[start:min(start+1000, len(commandIDs))]
		var rows []struct {
			CommandID string
			Status    string
			N         int
		}
		err := s.db.WithContext(ctx).Model(&Execution{}).Select("command_id, status, count(*) AS n").
			Where("command_id IN ?", chunk).Group("command_id, status").Scan(&rows).Error
		if err != nil {
			return nil, fmt.Errorf("counting executions: %w", err)
		}
		for _, r := range rows {
			if out[r.CommandID] == nil {
				out[r.CommandID] = map[string]int{}
			}
			out[r.CommandID][r.Status] = r.N
		}
	}
	return out, nil
}

// Activity is a summary of the fleet and the recent work.
type Activity struct {
	AgentsByStatus   map[string]int64
	CommandsByStatus map[string]int64
	Finished1m       int64 // executions finished in the last minute
	Finished5m       int64 // ... in the last five minutes
	Dispatch         DispatchLatency
}

// DispatchLatency summarises dispatched_at − created_at of the executions
// dispatched in the last five minutes (a retried execution counts its latest
// dispatch, so its retry delays are included).
type DispatchLatency struct {
	Samples int64
	P50     float64 // seconds
	P99     float64 // seconds
}

// Activity counts agents and commands by status, the executions finished in
// the last one and five minutes before now (no upper bound: a writer's clock
// may run a little ahead), and the dispatch latency
// percentiles (percentile_cont on Postgres; on SQLite the same linear
// interpolation over the latest 10,000 dispatches, computed here).
func (s *Store) Activity(ctx context.Context, now time.Time) (Activity, error) {
	a := Activity{}
	var err error
	if a.AgentsByStatus, err = s.countBy(ctx, &Agent{}, "status"); err != nil {
		return a, fmt.Errorf("counting agents: %w", err)
	}
	if a.CommandsByStatus, err = s.countBy(ctx, &Command{}, "status"); err != nil {
		return a, fmt.Errorf("counting commands: %w", err)
	}
	now = now.UTC()
	var fin struct{ F1, F5 int64 }
	err = s.db.WithContext(ctx).Raw(`SELECT coalesce(sum(CASE WHEN finished_at > ? THEN 1 ELSE 0 END), 0) AS f1, count(*) AS f5
FROM executions WHERE finished_at > ?`, now.Add(-time.Minute), now.Add(-5*time.Minute)).Scan(&fin).Error
	if err != nil {
		return a, fmt.Errorf("counting finished executions: %w", err)
	}
	a.Finished1m, a.Finished5m = fin.F1, fin.F5
	since := now.Add(-5 * time.Minute)
	if a.Dispatch, err = s.dialect.dispatchLatency(ctx, s.db, since); err != nil {
		return a, fmt.Errorf("measuring dispatch latency: %w", err)
	}
	return a, nil
}

// Percentile is Postgres' percentile_cont over sorted values: linear
// interpolation between the closest ranks; 0 for no values.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := p * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

func (s *Store) countBy(ctx context.Context, model any, column string) (map[string]int64, error) {
	var rows []struct {
		Key string
		N   int64
	}
	if err := s.db.WithContext(ctx).Model(model).Select(column + " AS key, count(*) AS n").Group(column).Scan(&rows).Error; err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.Key] = r.N
	}
	return out, nil
}
