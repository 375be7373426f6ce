// Package store is the durable state of the control plane: agents, commands,
// executions, telemetry and the audit trail, kept through GORM in Postgres (the
// production database) or SQLite (the embedded one-process mode). It is the
// source of truth; everything on the bus can be rebuilt from it.
//
// Where the two databases differ, the store asks its dialect (dialect.go, with
// one implementation in dialect_postgres.go and one in dialect_sqlite.go):
// Postgres claims work with FOR UPDATE SKIP LOCKED so replicas share the queue;
// SQLite has one writer (a single connection), which serialises claims in the
// one process that uses it. Package storetest holds the suite both pass.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// Dialects.
const (
	Postgres = "postgres"
	SQLite   = "sqlite"
)

// SQLitePrefix starts a URL naming an SQLite file: sqlite://path/to/file.db.
const SQLitePrefix = "sqlite://"

// Config configures the connection pool.
type Config struct {
	URL             string // postgres://... (or a key=value DSN), or sqlite://PATH
	MaxConns        int
	MinConns        int
	ConnectTimeout  time.Duration
	ConnMaxIdleTime time.Duration
	ConnMaxLifetime time.Duration
	// AuditKey is the HMAC key of the audit chain (at least MinAuditKeyLen
	// bytes). The database never holds it.
	AuditKey []byte
	// PreviousAuditKeys are keys older rows may be chained under (rotation).
	PreviousAuditKeys [][]byte
}

func (c *Config) setDefaults() {
	if c.MaxConns <= 0 {
		c.MaxConns = 10
	}
	if c.MinConns < 0 {
		c.MinConns = 0
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.ConnMaxIdleTime <= 0 {
		c.ConnMaxIdleTime = 5 * time.Minute
	}
	if c.ConnMaxLifetime <= 0 {
		c.ConnMaxLifetime = time.Hour
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.URL == "" {
		return errors.New("store: database URL is required")
	}
	if c.MinConns > c.MaxConns && c.MaxConns > 0 {
		return errors.New("store: min connections exceed max connections")
	}
	if _, err := newAuditKeyring(c.AuditKey, c.PreviousAuditKeys); err != nil {
		return err
	}
	return nil
}

// Store is the durable state.
type Store struct {
	db        *gorm.DB
	dialect   dialect
	auditKeys auditKeyring
	observe   func(context.Context, []CommandChange)
	// observeExecutions is called with the execution changes of result batches.
	observeExecutions func(context.Context, []ExecutionChange)
	batches           batchOrder
}

// Dialect returns Postgres or SQLite.
func (s *Store) Dialect() string { return s.dialect.name() }

// Open connects to the database named by cfg.URL and verifies the connection.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := dialectFor(cfg.URL)
	dialector, maxConns, err := d.open(cfg.URL, cfg.MaxConns)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	db, err := gorm.Open(dialector, &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		PrepareStmt:            false,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("opening database: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("opening database: %w", err)
	}
	sqlDB.SetMaxOpenConns(cfg.MaxConns)
	sqlDB.SetMaxIdleConns(cfg.MaxConns)
	sqlDB.SetConnMaxIdleTime(cfg.ConnMaxIdleTime)
	sqlDB.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	if err := d.checkOpened(pingCtx, db); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("opening database: %w", err)
	}
	keys, _ := newAuditKeyring(cfg.AuditKey, cfg.PreviousAuditKeys) // checked by Validate
	return &Store{db: db, dialect: d, auditKeys: keys}, nil
}

// Close releases the pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Ping checks the database is reachable.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.PingContext(ctx)
}
