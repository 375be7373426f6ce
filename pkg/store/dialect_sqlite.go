package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/gorm"
)

// sqliteDialect is the embedded database of the one-process mode. It has one
// writer: a single connection serialises every transaction (claims,
// migrations), the one process is always the leader, and batches are rows
// written one by one in a transaction, which one local writer makes cheap.
type sqliteDialect struct{}

func (sqliteDialect) name() string { return SQLite }

// open uses one connection: SQLite has a single writer, and one connection
// makes every transaction wait its turn instead of failing with SQLITE_BUSY.
func (sqliteDialect) open(url string, _ int) (gorm.Dialector, int, error) {
	dsn, err := sqliteDSN(strings.TrimPrefix(url, SQLitePrefix))
	if err != nil {
		return nil, 0, err
	}
	return sqlite.Open(dsn), 1, nil
}

// checkOpened: a file that is not a database only shows on the first real query.
func (sqliteDialect) checkOpened(ctx context.Context, db *gorm.DB) error {
	var n int
	return db.WithContext(ctx).Raw("SELECT count(*) FROM sqlite_master").Scan(&n).Error
}

func (sqliteDialect) versionTable() string {
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT     NOT NULL,
    applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
)`
}

// lockMigrations: SQLite is used by one process, whose single connection
// serialises migrators.
func (sqliteDialect) lockMigrations(context.Context, *sql.Conn) (func(), error) {
	return func() {}, nil
}

// tryLead: the one process is always the leader.
func (sqliteDialect) tryLead(context.Context, *gorm.DB, int64) (*Leader, error) {
	return &Leader{}, nil
}

// claimLock: the single writer connection serialises claims.
func (sqliteDialect) claimLock() string { return "" }

func (sqliteDialect) serialiseClaims(*gorm.DB) error { return nil }

func (sqliteDialect) skipLocked(q *gorm.DB) *gorm.DB { return q }

func (sqliteDialect) rowID() string { return "rowid" }

// sqliteExecutionsPerInsert bounds the rows of one INSERT: 8 parameters a
// row stay below SQLite's limit of 32,766.
const sqliteExecutionsPerInsert = 1000

// insertExecutions writes the executions with multi-row INSERTs.
func (sqliteDialect) insertExecutions(tx *gorm.DB, es newExecutions) error {
	for start := 0; start < len(es.IDs); start += sqliteExecutionsPerInsert {
		end := min(start+sqliteExecutionsPerInsert, len(es.IDs))
		var sb strings.Builder
		sb.WriteString(`INSERT INTO executions (id, command_id, agent_id, status, priority, next_attempt_at, created_at, updated_at) VALUES `)
		args := make([]any, 0, (end-start)*8)
		for i := start; i < end; i++ {
			if i > start {
				sb.WriteByte(',')
			}
			sb.WriteString("(?,?,?,?,?,?,?,?)")
			args = append(args, es.IDs[i], es.CommandID, es.AgentIDs[i], ExecQueued, int16(es.Priority), es.At, es.At, es.At)
		}
		if err := tx.Exec(sb.String(), args...).Error; err != nil {
			return err
		}
	}
	return nil
}

// insertTelemetry uses multi-row inserts.
func (sqliteDialect) insertTelemetry(ctx context.Context, db *gorm.DB, samples []TelemetrySample) error {
	return db.WithContext(ctx).CreateInBatches(samples, 500).Error
}

// touchAgents updates the batch row by row in one transaction.
func (sqliteDialect) touchAgents(ctx context.Context, db *gorm.DB, ups []HealthUpdate) error {
	now := time.Now().UTC()
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, u := range ups {
			err := tx.Model(&Agent{}).Where("id = ?", u.AgentID).Updates(map[string]any{
				"last_seen_at": u.At.UTC(), "health_status": u.Status, "uptime_s": u.UptimeS, "updated_at": now,
			}).Error
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func (sqliteDialect) recordResults(tx *gorm.DB, rs []Result, picked []int, now time.Time) ([]string, error) {
	commands := make([]string, len(rs))
	for _, i := range picked {
		cmd, err := recordResult(tx, rs[i], now)
		if err != nil {
			return nil, err
		}
		commands[i] = cmd
	}
	return commands, nil
}

// recordResult writes one result and returns its command ("": not recorded).
func recordResult(tx *gorm.DB, r Result, now time.Time) (string, error) {
	finished := r.FinishedAt.UTC()
	if r.FinishedAt.IsZero() {
		finished = now
	}
	upd := map[string]any{
		"status": r.Status, "exit_code": r.ExitCode, "output": r.Output, "output_truncated": r.OutputTruncated, "error": r.Error,
		"finished_at": finished, "updated_at": now,
	}
	if !r.StartedAt.IsZero() {
		upd["started_at"] = r.StartedAt.UTC() // the agent's clock, consistent with finished_at
	}
	res := tx.Model(&Execution{}).
		Where("id = ? AND agent_id = ? AND status IN ?", r.ExecutionID, r.AgentID, []string{ExecDispatched, ExecRunning, ExecRetrying}).
		Updates(upd)
	if res.Error != nil {
		return "", fmt.Errorf("updating execution: %w", res.Error)
	}
	return commandIfMoved(tx, res, r.ExecutionID)
}

// commandIfMoved is the command of the execution an update res moved, or ""
// when it moved none.
func commandIfMoved(tx *gorm.DB, res *gorm.DB, executionID string) (string, error) {
	if res.RowsAffected == 0 {
		return "", nil
	}
	var cmd string
	if err := tx.Raw(`SELECT command_id FROM executions WHERE id = ?`, executionID).Scan(&cmd).Error; err != nil {
		return "", fmt.Errorf("finding the execution's command: %w", err)
	}
	return cmd, nil
}

func (sqliteDialect) ackExecutions(tx *gorm.DB, as []Ack, now time.Time) ([]string, error) {
	acked := make([]string, len(as))
	for i, a := range as {
		cmd, err := ackExecution(tx, a, now)
		if err != nil {
			return nil, err
		}
		acked[i] = cmd
	}
	return acked, nil
}

// ackExecution moves a dispatched execution of the acking agent to running.
func ackExecution(db *gorm.DB, a Ack, now time.Time) (string, error) {
	res := db.Model(&Execution{}).
		Where("id = ? AND agent_id = ? AND status = ?", a.ExecutionID, a.AgentID, ExecDispatched).
		Updates(map[string]any{"status": ExecRunning, "started_at": a.At.UTC(), "updated_at": now})
	if res.Error != nil {
		return "", fmt.Errorf("acknowledging execution: %w", res.Error)
	}
	return commandIfMoved(db, res, a.ExecutionID)
}

// agentAttributes uses json_each, and substr for the prefix.
func (sqliteDialect) agentAttributes(q *gorm.DB, f AgentFilter) *gorm.DB {
	keys := make([]string, 0, len(f.Labels))
	for k := range f.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		q = q.Where("EXISTS (SELECT 1 FROM json_each(agents.labels) AS l WHERE l.key = ? AND l.type = 'text' AND l.value = ?)", k, f.Labels[k])
	}
	if f.Capability != "" {
		q = q.Where("EXISTS (SELECT 1 FROM json_each(agents.capabilities) AS c WHERE c.type = 'text' AND c.value = ?)", f.Capability)
	}
	if f.IDPrefix != "" {
		// substr, not LIKE: SQLite's LIKE ignores ASCII case, Postgres' does not.
		q = q.Where("substr(id, 1, length(?)) = ?", f.IDPrefix, f.IDPrefix)
	}
	return q
}

// seriesSQL is Postgres' for SQLite: whole epoch milliseconds (SQLite's time
// resolution) from julianday, integer division by the step in milliseconds;
// values of JSON type integer or real.
func (sqliteDialect) seriesSQL(metrics []string, from time.Time, step int64) (string, []any) {
	key, typ, val := "m.key", "m.type", "m.value"
	join := `CROSS JOIN json_each(t.metrics) AS m`
	var args []any
	if len(metrics) > 0 {
		// metricPattern excludes quotes and backslashes, so the path is literal.
		path := `'$."' || k.key || '"'`
		key, typ, val = "k.key", "json_type(t.metrics, "+path+")", "json_extract(t.metrics, "+path+")"
		var vals string
		vals, args = valuesList(metrics)
		join = `CROSS JOIN (SELECT column1 AS key FROM (VALUES ` + vals + `)) AS k`
	}
	return `SELECT ` + key + ` AS metric, (CAST(round((julianday(t.ts) - 2440587.5) * 86400000.0) AS INTEGER) - ?) / ? AS bucket,
  avg(` + val + `) AS avg, max(` + val + `) AS max, count(*) AS count
FROM telemetry t ` + join + `
WHERE t.agent_id = ? AND t.ts >= ? AND t.ts < ? AND ` + typ + ` IN ('integer', 'real')
GROUP BY 1, 2 ORDER BY 1, 2 LIMIT ?`, append([]any{from.UnixMilli(), step * 1000}, args...)
}

func (sqliteDialect) metricValue(metric string) (string, []any) {
	path := `$."` + metric + `"` // metricPattern excludes quotes and backslashes
	return `CASE WHEN json_type(metrics, ?) IN ('integer', 'real') THEN CAST(json_extract(metrics, ?) AS REAL) END`, []any{path, path}
}

// maxLatencySample bounds the latencies SQLite reads to compute percentiles.
const maxLatencySample = 10_000

// dispatchLatency computes percentile_cont's linear interpolation here, over
// the latest maxLatencySample dispatches.
func (sqliteDialect) dispatchLatency(ctx context.Context, db *gorm.DB, since time.Time) (DispatchLatency, error) {
	var lat []float64
	err := db.WithContext(ctx).Raw(`SELECT (julianday(dispatched_at) - julianday(created_at)) * 86400.0
FROM executions WHERE dispatched_at > ? ORDER BY dispatched_at DESC LIMIT ?`, since, maxLatencySample).Scan(&lat).Error
	if err != nil {
		return DispatchLatency{}, err
	}
	slices.Sort(lat)
	return DispatchLatency{Samples: int64(len(lat)), P50: Percentile(lat, 0.5), P99: Percentile(lat, 0.99)}, nil
}

// sqliteDSN is the driver DSN of a database file with the pragmas the store
// relies on (WAL, foreign keys, a busy timeout) and immediate transactions.
func sqliteDSN(path string) (string, error) {
	if path == "" {
		return "", errors.New("store: sqlite URL needs a file path: sqlite://PATH")
	}
	if dir := filepath.Dir(path); dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return "", fmt.Errorf("store: sqlite directory: %w", err)
		}
	}
	pragmas := []string{"busy_timeout(10000)", "journal_mode(WAL)", "foreign_keys(1)", "synchronous(NORMAL)"}
	var q strings.Builder
	q.WriteString(path + "?_time_format=sqlite&_txlock=immediate")
	for _, p := range pragmas {
		q.WriteString("&_pragma=" + p)
	}
	return q.String(), nil
}
