// Package testenv gives tests their own Postgres database and Redis key prefix
// on the machine's real services. Without the services a test is skipped with
// the reason, unless VIWORKS_REQUIRE_SERVICES=1, when it fails instead.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
)

// Environment variables that point tests at the services.
const (
	EnvPostgres = "VIWORKS_TEST_DATABASE_URL" // admin URL; default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
	EnvRedis    = "VIWORKS_TEST_REDIS_URL"    // default redis://127.0.0.1:6379/0
	EnvRequire  = "VIWORKS_REQUIRE_SERVICES"
)

func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s is required (VIWORKS_REQUIRE_SERVICES=1) but unavailable: %v", what, err)
	}
	t.Skipf("skipping: %s unavailable (%v); set VIWORKS_REQUIRE_SERVICES=1 to fail instead", what, err)
}

// RandomSuffix returns n random hex bytes.
func RandomSuffix(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Postgres creates a fresh, empty database for the test, drops it at cleanup and
// returns its URL.
func Postgres(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(EnvPostgres)
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", admin)
	if err != nil {
		unavailable(t, "postgres", err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		unavailable(t, "postgres", err)
	}
	name := "viworks_test_" + RandomSuffix(6)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		_ = db.Close()
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		_ = db.Close()
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parsing %s: %v", EnvPostgres, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Redis returns the Redis URL and a key prefix unique to this test; keys under
// the prefix are deleted at cleanup.
func Redis(t testing.TB) (redisURL, prefix string) {
	t.Helper()
	redisURL = os.Getenv(EnvRedis)
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("parsing %s: %v", EnvRedis, err)
	}
	opts.MaxRetries = -1 // an absent server is reported at once, not after retries
	c := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		unavailable(t, "redis", err)
	}
	prefix = fmt.Sprintf("viworks-test-%s:", RandomSuffix(6))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			_ = c.Del(ctx, iter.Val()).Err()
		}
		_ = c.Close()
	})
	return redisURL, prefix
}

// AuditKey is the audit chain key of the stores tests open.
var AuditKey = []byte("viworks-test-audit-key-0123456789abcdef")
