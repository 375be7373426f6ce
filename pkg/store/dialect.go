package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"gorm.io/gorm"
)

// dialect is everything Postgres and SQLite do differently. The store holds
// one (postgresDialect or sqliteDialect, chosen by the URL) and asks it, never
// which database it is.
type dialect interface {
	// name is Postgres or SQLite: Store.Dialect and the migrations folder.
	name() string
	// open returns the GORM dialector of url and the pool size to use, given
	// the configured one.
	open(url string, maxConns int) (gorm.Dialector, int, error)
	// checkOpened runs after the first ping and fails on a database that
	// cannot be used.
	checkOpened(ctx context.Context, db *gorm.DB) error

	// versionTable creates schema_migrations.
	versionTable() string
	// lockMigrations serialises migrators on conn until the returned func runs.
	lockMigrations(ctx context.Context, conn *sql.Conn) (unlock func(), err error)
	// tryLead takes the leadership lease with key (nil while another holds it).
	tryLead(ctx context.Context, db *gorm.DB, key int64) (*Leader, error)

	// claimLock is the locking clause that ends the claim query.
	claimLock() string
	// serialiseClaims makes concurrent capped claims count the work in flight
	// one at a time, inside tx.
	serialiseClaims(tx *gorm.DB) error
	// skipLocked locks the rows q selects for update, skipping rows locked by
	// another transaction.
	skipLocked(q *gorm.DB) *gorm.DB
	// rowID is the physical row id that batched deletes select by.
	rowID() string

	// insertExecutions writes a new command's queued executions in tx; every
	// column it does not name takes its default.
	insertExecutions(tx *gorm.DB, es newExecutions) error
	// insertTelemetry stores a batch of samples.
	insertTelemetry(ctx context.Context, db *gorm.DB, samples []TelemetrySample) error
	// touchAgents writes a batch (at most 1000) of heartbeats.
	touchAgents(ctx context.Context, db *gorm.DB, ups []HealthUpdate) error
	// recordResults writes the results rs[i] for i in picked (one per
	// execution) whose execution is the result's agent's and not final, and
	// returns, per index of rs, the command of each recorded one ("": not
	// recorded).
	recordResults(tx *gorm.DB, rs []Result, picked []int, now time.Time) ([]string, error)
	// ackExecutions moves the acked executions (at least one) that are still
	// dispatched to running; per ack, the command of a moved one, else "".
	ackExecutions(tx *gorm.DB, as []Ack, now time.Time) ([]string, error)

	// agentAttributes applies the labels, capability and id prefix of f.
	agentAttributes(q *gorm.DB, f AgentFilter) *gorm.DB
	// seriesSQL is the downsampling query of TelemetrySeries with its leading
	// arguments; agent id, from, to and the row limit follow.
	seriesSQL(metrics []string, from time.Time, step int64) (string, []any)
	// metricValue is an expression of a numeric metric of telemetry.metrics
	// (NULL when absent or not a number) with its arguments.
	metricValue(metric string) (string, []any)
	// dispatchLatency measures the executions dispatched after since.
	dispatchLatency(ctx context.Context, db *gorm.DB, since time.Time) (DispatchLatency, error)
}

// dialectFor picks the dialect of a database URL: sqlite://PATH is SQLite,
// anything else Postgres.
func dialectFor(url string) dialect {
	if strings.HasPrefix(url, SQLitePrefix) {
		return sqliteDialect{}
	}
	return postgresDialect{}
}

// valuesList is "(?), (?), ..." for items, with the items as arguments.
func valuesList(items []string) (string, []any) {
	parts := make([]string, len(items))
	args := make([]any, len(items))
	for i, it := range items {
		parts[i], args[i] = "(?)", it
	}
	return strings.Join(parts, ", "), args
}
