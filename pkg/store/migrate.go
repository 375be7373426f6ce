package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFiles embed.FS

// migrationLockKey is the pg_advisory_lock key that serialises migrators.
const migrationLockKey = 0x76697772 // "viwr"

// ErrSchemaBehind is returned by CheckSchema when migrations are pending.
var ErrSchemaBehind = errors.New("database schema is behind")

type migration struct {
	version int
	name    string
	sql     string
}

// SchemaDigest identifies the schema the migrations build: a SHA-256 over every
// migration file of both dialects, names and contents. Tests key template
// databases on it.
func SchemaDigest() string {
	h := sha256.New()
	_ = fs.WalkDir(migrationFiles, "migrations", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(migrationFiles, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(body))
		h.Write(body)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

// loadMigrations reads one dialect's migrations; both dialects have the same
// versions (a test checks), each written for its database. Versions are
// unique and ascending but may have gaps (a number reserved by a branch not yet
// merged); each version is applied once, whatever its order of arrival.
func loadMigrations(dialect string) ([]migration, error) {
	dir := "migrations/" + dialect
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", e.Name())
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: bad version: %w", e.Name(), err)
		}
		body, err := fs.ReadFile(migrationFiles, dir+"/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version < 1 || (i > 0 && m.version == out[i-1].version) {
			return nil, fmt.Errorf("migration %s: versions must be unique and from 1", m.name)
		}
	}
	return out, nil
}

// MigrationVersions lists the migration versions shipped for a dialect.
func MigrationVersions(dialect string) []int {
	ms, err := loadMigrations(dialect)
	if err != nil {
		return nil
	}
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = m.version
	}
	return out
}

// LatestVersion is the schema version this build expects.
func LatestVersion() int {
	ms, err := loadMigrations(Postgres)
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// Migrate applies pending migrations, each in its own transaction. On Postgres
// it holds a session-level advisory lock, so several migrators (one per pod) may
// run at once: one applies, the others wait and then find nothing to do. SQLite
// is used by one process, whose single connection serialises it. It returns the
// versions it applied.
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	ms, err := loadMigrations(s.dialect.name())
	if err != nil {
		return nil, err
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		return nil, err
	}
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring migration connection: %w", err)
	}
	defer func() { _ = conn.Close() }()
	unlock, err := s.dialect.lockMigrations(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := conn.ExecContext(ctx, s.dialect.versionTable()); err != nil {
		return nil, fmt.Errorf("creating schema_migrations: %w", err)
	}
	var applied []int
	for _, m := range ms {
		done, err := applyMigration(ctx, conn, m)
		if err != nil {
			return applied, err
		}
		if done {
			applied = append(applied, m.version)
		}
	}
	return applied, nil
}

// applyMigration applies m unless the version table, read inside the same
// transaction, already has its version.
func applyMigration(ctx context.Context, conn *sql.Conn, m migration) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("applying migration %s: %w", m.name, err)
	}
	defer func() { _ = tx.Rollback() }()
	var have int
	// $n placeholders work in SQLite too.
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&have); err != nil {
		return false, fmt.Errorf("reading schema version: %w", err)
	}
	if have > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("applying migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
		return false, fmt.Errorf("recording migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("committing migration %s: %w", m.name, err)
	}
	return true, nil
}

// SchemaVersion returns the highest applied migration (0 on an empty database).
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	if !s.db.WithContext(ctx).Migrator().HasTable("schema_migrations") {
		return 0, nil
	}
	var v int
	if err := s.db.WithContext(ctx).Raw(`SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v).Error; err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}

// CheckSchema refuses a database whose schema is older (or newer) than this
// build: a shipped migration not applied, or a version newer than the latest.
func (s *Store) CheckSchema(ctx context.Context) error {
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	want := LatestVersion()
	missing, err := s.missingVersions(ctx)
	if err != nil {
		return err
	}
	switch {
	case v < want || len(missing) > 0:
		return fmt.Errorf("%w: at version %d, this build needs %d (missing %v); run `scheduler migrate`", ErrSchemaBehind, v, want, missing)
	case v > want:
		return fmt.Errorf("database schema version %d is newer than this build (%d); upgrade the binary", v, want)
	}
	return nil
}

// missingVersions lists the shipped migrations the database has not applied.
func (s *Store) missingVersions(ctx context.Context) ([]int, error) {
	shipped := MigrationVersions(s.dialect.name())
	if !s.db.WithContext(ctx).Migrator().HasTable("schema_migrations") {
		return shipped, nil
	}
	var applied []int
	if err := s.db.WithContext(ctx).Raw(`SELECT version FROM schema_migrations`).Scan(&applied).Error; err != nil {
		return nil, fmt.Errorf("reading schema versions: %w", err)
	}
	var missing []int
	for _, v := range shipped {
		if !slices.Contains(applied, v) {
			missing = append(missing, v)
		}
	}
	return missing, nil
}
