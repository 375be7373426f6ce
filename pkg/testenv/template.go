package testenv

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// templates holds, per template database name, the one preparation of this
// test binary.
var templates sync.Map // name → *templateOnce

type templateOnce struct {
	once sync.Once
	err  error
}

// PostgresFrom is Postgres with the database copied from a template that
// prepare built once (for example by running the migrations): creating a
// database from a template is a file copy, far cheaper than migrating each
// test's database. key names what prepare builds (a digest of the migrations),
// so a changed schema builds a new template; templates are shared by the test
// binaries of a run, and by later runs, under an advisory lock. prepare must
// close its connections before it returns.
func PostgresFrom(t testing.TB, key string, prepare func(ctx context.Context, url string) error) string {
	t.Helper()
	name := "viworks_tmpl_" + key
	v, _ := templates.LoadOrStore(name, &templateOnce{})
	tmpl := v.(*templateOnce)
	tmpl.once.Do(func() { tmpl.err = buildTemplate(name, prepare) })
	if tmpl.err != nil {
		t.Fatalf("preparing template database %s: %v", name, tmpl.err)
	}
	return createDatabase(t, name)
}

// buildTemplate creates template name with prepare unless a complete one
// exists. It builds under another name and renames at the end, so a template
// that exists is complete.
func buildTemplate(name string, prepare func(ctx context.Context, url string) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, admin, err := openPostgres(ctx)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() { _ = db.Close() }()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtext($1))`, name); err != nil {
		return fmt.Errorf("locking: %w", err)
	}
	defer func() { _, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(hashtext($1))`, name) }()
	var exists bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("looking for the template: %w", err)
	}
	if exists {
		return nil
	}
	building := name + "_building"
	if _, err := conn.ExecContext(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping a half-built template: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+building); err != nil {
		return fmt.Errorf("creating the template: %w", err)
	}
	buildURL, err := databaseURL(admin, building)
	if err != nil {
		return err
	}
	if err := prepare(ctx, buildURL); err != nil {
		return err
	}
	if _, err := conn.ExecContext(ctx, "ALTER DATABASE "+building+" RENAME TO "+name); err != nil {
		return fmt.Errorf("completing the template: %w", err)
	}
	return nil
}

// createDatabase creates the test's database, from template when it is not
// empty, drops it at cleanup and returns its URL.
func createDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, admin, err := openPostgres(ctx)
	if err != nil {
		unavailable(t, "postgres", err)
	}
	// Named after the package, so a leftover database says whose it is.
	name := "viworks_test_" + suite() + "_" + RandomSuffix(6)
	announce("postgres", fmt.Sprintf("using postgres at %s (databases viworks_test_%s_*, dropped after each test)", hostOf(admin), suite()))
	stmt := "CREATE DATABASE " + name
	if template != "" {
		stmt += " TEMPLATE " + template
	}
	for attempt := 0; ; attempt++ {
		_, err = db.ExecContext(ctx, stmt)
		// Another binary may be connected to the template for a moment (it is
		// looking for it); try again briefly.
		if err == nil || attempt == 50 || !strings.Contains(err.Error(), "is being accessed by other users") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		_ = db.Close()
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		_ = db.Close()
	})
	u, err := databaseURL(admin, name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// databaseURL is the admin URL with database name in place of its own.
func databaseURL(admin, name string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("parsing %s: %w", EnvPostgres, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}
