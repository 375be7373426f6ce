package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// postgresDialect is the production database: replicas share it, so claims
// skip locked rows, advisory locks serialise migrators, capped claims and the
// leader, and batches are single statements.
type postgresDialect struct{}

func (postgresDialect) name() string { return Postgres }

func (postgresDialect) open(url string, maxConns int) (gorm.Dialector, int, error) {
	return postgres.New(postgres.Config{DSN: url}), maxConns, nil
}

func (postgresDialect) checkOpened(context.Context, *gorm.DB) error { return nil }

func (postgresDialect) versionTable() string {
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`
}

// lockMigrations holds a session-level advisory lock, so several migrators
// (one per pod) may run at once: one applies, the others wait.
func (postgresDialect) lockMigrations(ctx context.Context, conn *sql.Conn) (func(), error) {
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return nil, fmt.Errorf("taking migration lock: %w", err)
	}
	return func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLockKey)
	}, nil
}

// tryLead takes a session-level advisory lock on a dedicated connection.
func (postgresDialect) tryLead(ctx context.Context, db *gorm.DB, key int64) (*Leader, error) {
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring leader connection: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("trying leader lock: %w", err)
	}
	if !ok {
		_ = conn.Close()
		return nil, nil
	}
	return &Leader{conn: conn, key: key}, nil
}

func (postgresDialect) claimLock() string { return "FOR UPDATE OF e SKIP LOCKED" }

// serialiseClaims: replicas count in-flight work one at a time, so together
// they never exceed the global cap.
func (postgresDialect) serialiseClaims(tx *gorm.DB) error {
	if err := tx.Exec(`SELECT pg_advisory_xact_lock(?)`, claimLockKey).Error; err != nil {
		return fmt.Errorf("taking claim lock: %w", err)
	}
	return nil
}

func (postgresDialect) skipLocked(q *gorm.DB) *gorm.DB {
	return q.Clauses(clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"})
}

func (postgresDialect) rowID() string { return "ctid" }

// insertExecutions writes any number of executions in one statement of
// seven parameters: the ids and agent ids as two text arrays (pgx encodes a
// []string as text[]), unnested side by side. It goes to the transaction's
// connection directly, without GORM building a statement.
func (postgresDialect) insertExecutions(tx *gorm.DB, es newExecutions) error {
	_, err := tx.Statement.ConnPool.ExecContext(tx.Statement.Context, `INSERT INTO executions
  (id, command_id, agent_id, status, priority, next_attempt_at, created_at, updated_at)
SELECT u.id, $1, u.agent_id, $2, $3, $4, $4, $4 FROM unnest($5::text[], $6::text[]) AS u(id, agent_id)`,
		es.CommandID, ExecQueued, int16(es.Priority), es.At, es.IDs, es.AgentIDs)
	return err
}

var telemetryColumns = []string{"agent_id", "ts", "metrics", "received_at"}

// insertTelemetry streams samples with COPY FROM over one pooled connection.
func (postgresDialect) insertTelemetry(ctx context.Context, db *gorm.DB, samples []TelemetrySample) error {
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	return conn.Raw(func(driverConn any) error {
		c, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return errors.New("the postgres driver is not pgx")
		}
		n, err := c.Conn().CopyFrom(ctx, pgx.Identifier{"telemetry"}, telemetryColumns, &telemetryRows{samples: samples, at: -1})
		if err != nil {
			return err
		}
		if n != int64(len(samples)) {
			return fmt.Errorf("copied %d of %d rows", n, len(samples))
		}
		return nil
	})
}

// touchAgents updates the batch in one statement.
func (postgresDialect) touchAgents(ctx context.Context, db *gorm.DB, ups []HealthUpdate) error {
	var sb strings.Builder
	args := make([]any, 0, len(ups)*4+1)
	sb.WriteString(`UPDATE agents AS a SET last_seen_at = v.at, health_status = v.status, uptime_s = v.uptime, updated_at = ?
FROM (VALUES `)
	args = append(args, time.Now().UTC())
	for i, u := range ups {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString("(?::text, ?::text, ?::bigint, ?::timestamptz)")
		args = append(args, u.AgentID, u.Status, u.UptimeS, u.At.UTC())
	}
	sb.WriteString(`) AS v(id, status, uptime, at) WHERE a.id = v.id`)
	return db.WithContext(ctx).Exec(sb.String(), args...).Error
}

// recordResultsSQL updates the batch's executions from arrays, one element
// per result: a constant statement (prepared once per connection) with ten
// parameters whatever the batch size.
const recordResultsSQL = `UPDATE executions AS e SET status = v.status, exit_code = v.exit_code, output = v.output,
  output_truncated = v.output_truncated, error = v.error, finished_at = v.finished_at,
  started_at = coalesce(v.started_at, e.started_at), updated_at = $1
FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::bool[], $8::text[], $9::timestamptz[], $10::timestamptz[])
  AS v(id, agent_id, status, exit_code, output, output_truncated, error, finished_at, started_at)
WHERE e.id = v.id AND e.agent_id = v.agent_id AND e.status IN ('dispatched', 'running', 'retrying')
RETURNING e.id, e.command_id`

// recordResults writes the picked results in one statement.
func (postgresDialect) recordResults(tx *gorm.DB, rs []Result, picked []int, now time.Time) ([]string, error) {
	n := len(picked)
	ids, agents, statuses, outputs, errs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	codes, truncated := make([]int64, n), make([]bool, n)
	finished, started := make([]time.Time, n), make([]pgtype.Timestamptz, n)
	at := make(map[string]int, n)
	for k, i := range picked {
		r := rs[i]
		at[r.ExecutionID] = i
		ids[k], agents[k], statuses[k], outputs[k], errs[k] = r.ExecutionID, r.AgentID, r.Status, r.Output, r.Error
		codes[k], truncated[k] = int64(r.ExitCode), r.OutputTruncated
		finished[k] = r.FinishedAt.UTC()
		if r.FinishedAt.IsZero() {
			finished[k] = now
		}
		if !r.StartedAt.IsZero() {
			// The agent's clock, consistent with finished_at.
			started[k] = pgtype.Timestamptz{Time: r.StartedAt.UTC(), Valid: true}
		}
	}
	commands := make([]string, len(rs))
	err := queryPairs(tx, recordResultsSQL, func(id, cmd string) { commands[at[id]] = cmd },
		now, ids, agents, statuses, codes, outputs, truncated, errs, finished, started)
	if err != nil {
		return nil, fmt.Errorf("updating executions: %w", err)
	}
	return commands, nil
}

// ackExecutionsSQL moves the acked executions still dispatched to running,
// from arrays (see recordResultsSQL).
const ackExecutionsSQL = `UPDATE executions AS e SET status = 'running', started_at = v.at, updated_at = $1
FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS v(id, agent_id, at)
WHERE e.id = v.id AND e.agent_id = v.agent_id AND e.status = 'dispatched'
RETURNING e.id, e.command_id`

// ackExecutions moves the acked executions in one statement; an ack repeated
// within the batch counts once (the first).
func (postgresDialect) ackExecutions(tx *gorm.DB, as []Ack, now time.Time) ([]string, error) {
	acked := make([]string, len(as))
	first := make(map[string]int, len(as))
	ids, agents, ats := make([]string, 0, len(as)), make([]string, 0, len(as)), make([]time.Time, 0, len(as))
	for i, a := range as {
		if _, dup := first[a.ExecutionID]; dup {
			continue
		}
		first[a.ExecutionID] = i
		ids, agents, ats = append(ids, a.ExecutionID), append(agents, a.AgentID), append(ats, a.At.UTC())
	}
	err := queryPairs(tx, ackExecutionsSQL, func(id, cmd string) { acked[first[id]] = cmd }, now, ids, agents, ats)
	if err != nil {
		return nil, fmt.Errorf("acknowledging executions: %w", err)
	}
	return acked, nil
}

// queryPairs runs a statement returning two text columns on tx's connection,
// past GORM (which would expand the array arguments into lists), and calls
// row for each row.
func queryPairs(tx *gorm.DB, query string, row func(a, b string), args ...any) error {
	rows, err := tx.Statement.ConnPool.QueryContext(tx.Statement.Context, query, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var a, b string
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		row(a, b)
	}
	return rows.Err()
}

// agentAttributes uses jsonb containment and LIKE with escaping.
func (postgresDialect) agentAttributes(q *gorm.DB, f AgentFilter) *gorm.DB {
	if len(f.Labels) > 0 {
		b, _ := json.Marshal(f.Labels) // map[string]string always marshals
		q = q.Where("labels @> ?::jsonb", string(b))
	}
	if f.Capability != "" {
		b, _ := json.Marshal([]string{f.Capability})
		q = q.Where("capabilities @> ?::jsonb", string(b))
	}
	if f.IDPrefix != "" {
		q = q.Where(`id LIKE ? ESCAPE '\'`, likePrefix(f.IDPrefix))
	}
	return q
}

// likePrefix escapes a literal prefix for LIKE ... ESCAPE '\'.
func likePrefix(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(p) + "%"
}

// seriesSQL: the innermost query reads the agent's rows through
// telemetry_agent_ts_idx and turns each into (metric, bucket start, value)
// rows, taking values that are JSON numbers; OFFSET 0 keeps it a separate
// step, so the grouping hashes those narrow rows instead of sorting whole
// telemetry rows. date_bin aligns buckets to from; the bucket index is
// computed only on the grouped rows.
func (postgresDialect) seriesSQL(metrics []string, from time.Time, step int64) (string, []any) {
	join := `CROSS JOIN LATERAL jsonb_each(t.metrics) AS m(key, value)`
	var args []any
	if len(metrics) > 0 {
		var vals string
		vals, args = valuesList(metrics)
		join = `CROSS JOIN (VALUES ` + vals + `) AS k(key)
    CROSS JOIN LATERAL (SELECT k.key, t.metrics -> k.key) AS m(key, value)`
	}
	return `SELECT metric, (extract(epoch FROM b - ?::timestamptz) / ?::bigint)::bigint AS bucket, avg, max, count
FROM (
  SELECT key AS metric, b, avg(v) AS avg, max(v) AS max, count(*) AS count
  FROM (
    SELECT m.key, date_bin(?::bigint * interval '1 second', t.ts, ?::timestamptz) AS b, (m.value)::float8 AS v
    FROM telemetry t ` + join + `
    WHERE t.agent_id = ? AND t.ts >= ? AND t.ts < ? AND jsonb_typeof(m.value) = 'number'
    OFFSET 0
  ) s
  GROUP BY 1, 2
) g
ORDER BY 1, 2 LIMIT ?`, append([]any{from, step, step, from}, args...)
}

func (postgresDialect) metricValue(metric string) (string, []any) {
	return `CASE WHEN jsonb_typeof(metrics -> ?::text) = 'number' THEN (metrics ->> ?::text)::float8 END`, []any{metric, metric}
}

// dispatchLatency uses percentile_cont.
func (postgresDialect) dispatchLatency(ctx context.Context, db *gorm.DB, since time.Time) (DispatchLatency, error) {
	var d struct {
		Samples  int64
		P50, P99 *float64
	}
	err := db.WithContext(ctx).Raw(`SELECT count(*) AS samples,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM dispatched_at - created_at)) AS p50,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM dispatched_at - created_at)) AS p99
FROM executions WHERE dispatched_at > ?`, since).Scan(&d).Error
	if err != nil {
		return DispatchLatency{}, err
	}
	out := DispatchLatency{Samples: d.Samples}
	if d.P50 != nil && d.P99 != nil {
		out.P50, out.P99 = *d.P50, *d.P99
	}
	return out, nil
}
