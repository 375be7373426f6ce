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
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// announced holds, per service, whether this test binary already printed the
// line that says what its tests use (or that they skip).
var announced sync.Map

// announce prints one line per test binary and service to stderr (go test
// shows it with -v and whenever the package fails), so a run never uses a
// machine's services, or skips them, silently.
func announce(what, line string) {
	if _, done := announced.LoadOrStore(what, true); !done {
		fmt.Fprintf(os.Stderr, "testenv: %s: %s\n", suite(), line)
	}
}

func unavailable(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("%s is required (VIWORKS_REQUIRE_SERVICES=1) but unavailable: %v", what, err)
	}
	announce(what, fmt.Sprintf("skipping the %s-backed tests: %s (VIWORKS_REQUIRE_SERVICES=1 fails instead)", what, oneLine(err)))
	t.Skipf("skipping: %s unavailable (%v); set VIWORKS_REQUIRE_SERVICES=1 to fail instead", what, err)
}

// suite names the package under test from its test binary ("store.test":
// "store"), in the letters a database name may hold.
func suite() string {
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, name)
	if len(name) > 32 {
		name = name[:32]
	}
	if name == "" {
		name = "pkg"
	}
	return name
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
	return createDatabase(t, "")
}

// Redis returns the Redis URL and a key prefix unique to this test; keys under
// the prefix are deleted at cleanup.
func Redis(t testing.TB) (redisURL, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, redisURL, err := openRedis(ctx)
	if err != nil {
		unavailable(t, "redis", err)
	}
	prefix = fmt.Sprintf("viworks-test-%s-%s:", suite(), RandomSuffix(6))
	announce("redis", fmt.Sprintf("using redis at %s (keys viworks-test-%s-*, deleted after each test)", c.Options().Addr, suite()))
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

// hostOf is the host:port of a database URL, without credentials.
func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return "the configured server"
}

// openPostgres connects to the admin database the tests create theirs from.
func openPostgres(ctx context.Context) (*sql.DB, string, error) {
	admin := os.Getenv(EnvPostgres)
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	db, err := sql.Open("pgx", admin)
	if err != nil {
		return nil, admin, fmt.Errorf("parsing %s: %w", EnvPostgres, err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, admin, err
	}
	return db, admin, nil
}

// openRedis connects to the Redis the tests use.
func openRedis(ctx context.Context) (*redis.Client, string, error) {
	redisURL := os.Getenv(EnvRedis)
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, redisURL, fmt.Errorf("parsing %s: %w", EnvRedis, err)
	}
	opts.MaxRetries = -1 // an absent server is reported at once, not after retries
	c := redis.NewClient(opts)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, redisURL, err
	}
	return c, redisURL, nil
}

// Report writes one line per service saying what a test run will use: the
// server that answers, or that the tests needing it skip (or fail, with
// VIWORKS_REQUIRE_SERVICES=1). make test prints it first, since go test shows
// a passing package's output only with -v.
func Report(ctx context.Context, w io.Writer) {
	then := "the tests that need it skip (VIWORKS_REQUIRE_SERVICES=1: they fail)"
	if os.Getenv(EnvRequire) == "1" {
		then = "the tests that need it fail (VIWORKS_REQUIRE_SERVICES=1)"
	}
	if db, admin, err := openPostgres(ctx); err != nil {
		fmt.Fprintf(w, "testenv: postgres at %s unavailable (%s): %s\n", hostOf(admin), oneLine(err), then)
	} else {
		_ = db.Close()
		fmt.Fprintf(w, "testenv: postgres at %s: each test gets a database viworks_test_<package>_<random>, dropped after it\n", hostOf(admin))
	}
	if c, redisURL, err := openRedis(ctx); err != nil {
		fmt.Fprintf(w, "testenv: redis at %s unavailable (%s): %s\n", hostOf(redisURL), oneLine(err), then)
	} else {
		fmt.Fprintf(w, "testenv: redis at %s: each test gets keys viworks-test-<package>-<random>:*, deleted after it\n", c.Options().Addr)
		_ = c.Close()
	}
}

// oneLine is err's text on one line (pgx reports each address tried on its own).
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// AuditKey is the audit chain key of the stores tests open.
var AuditKey = []byte("viworks-test-audit-key-0123456789abcdef")
