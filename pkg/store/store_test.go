package store_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// databases names a fresh empty database of each dialect; every test of the
// suite runs against both, so SQLite and Postgres behave alike.
var databases = map[string]func(t *testing.T) string{
	store.Postgres: func(t *testing.T) string { return testenv.Postgres(t) },
	store.SQLite: func(t *testing.T) string {
		return store.SQLitePrefix + filepath.Join(t.TempDir(), "viworks.db")
	},
}

// migrated opens a migrated store of dialect name on a fresh database (on
// Postgres a copy of a migrated template, so Migrate finds nothing to do).
func migrated(t *testing.T, name string) *store.Store {
	t.Helper()
	ctx := context.Background()
	url := databases[name]
	if name == store.Postgres {
		url = func(t *testing.T) string { return storetest.MigratedPostgres(t) }
	}
	s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url(t), MaxConns: 8})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.Equal(t, name, s.Dialect())
	_, err = s.Migrate(ctx)
	require.NoError(t, err)
	return s
}

// TestConformance runs the storage suite on both dialects.
func TestConformance(t *testing.T) {
	t.Parallel()
	for name := range databases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, func(t *testing.T) *store.Store { return migrated(t, name) })
		})
	}
}

// each runs fn once per dialect with a migrated store, in parallel; it marks
// t parallel too.
func each(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	t.Parallel()
	for name := range databases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, migrated(t, name))
		})
	}
}

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// Several pods migrate one Postgres at once; SQLite belongs to one
			// process, so its migrators take turns.
			migrators := 4
			if name == store.SQLite {
				migrators = 1
			}
			testMigrate(t, newDB(t), migrators)
		})
	}
}

func testMigrate(t *testing.T, url string, migrators int) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
	require.NoError(t, err)
	defer s.Close()
	require.ErrorIs(t, s.CheckSchema(ctx), store.ErrSchemaBehind)

	var wg sync.WaitGroup
	applied := make([][]int, migrators)
	errs := make([]error, migrators)
	for i := range migrators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s2, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
			if err != nil {
				errs[i] = err
				return
			}
			defer s2.Close()
			applied[i], errs[i] = s2.Migrate(ctx)
		}()
	}
	wg.Wait()
	total := 0
	for i := range migrators {
		require.NoError(t, errs[i])
		total += len(applied[i])
	}
	require.Equal(t, len(store.MigrationVersions(s.Dialect())), total, "each migration applied exactly once")
	require.NoError(t, s.CheckSchema(ctx))
	again, err := s.Migrate(ctx)
	require.NoError(t, err)
	require.Empty(t, again)
}

func TestMigrationsMatchAcrossDialects(t *testing.T) {
	t.Parallel()
	pg, lite := store.MigrationVersions(store.Postgres), store.MigrationVersions(store.SQLite)
	require.NotEmpty(t, pg)
	require.Equal(t, pg, lite, "every migration exists for both dialects")
}

func TestOpenRejectsCorruptSQLite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "broken.db")
	require.NoError(t, os.WriteFile(path, []byte("this is not a database, just text that is long enough to look like a header...................................."), 0o600))
	_, err := store.Open(context.Background(), store.Config{AuditKey: testenv.AuditKey, URL: store.SQLitePrefix + path})
	require.Error(t, err)
}

func TestAggregate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		counts map[string]int
		want   string
		final  bool
	}{
		{map[string]int{"queued": 2}, "queued", false},
		{map[string]int{"queued": 1, "running": 1}, "running", false},
		{map[string]int{"queued": 1, "succeeded": 1}, "running", false},
		{map[string]int{"succeeded": 2}, "succeeded", true},
		{map[string]int{"succeeded": 1, "failed": 1}, "partially_succeeded", true},
		{map[string]int{"failed": 1, "timed_out": 1}, "failed", true},
		{map[string]int{"timed_out": 2}, "timed_out", true},
		{map[string]int{"cancelled": 2}, "cancelled", true},
		{map[string]int{"expired": 1}, "expired", true},
	}
	for _, tc := range cases {
		got, final := store.Aggregate(tc.counts)
		require.Equal(t, tc.want, got, "%v", tc.counts)
		require.Equal(t, tc.final, final, "%v", tc.counts)
	}
}

func TestRetryPolicyDelay(t *testing.T) {
	t.Parallel()
	p := store.RetryPolicy{Base: time.Second, Max: 10 * time.Second, Jitter: func(d time.Duration) time.Duration { return d }}
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 200: 10 * time.Second} {
		require.Equal(t, want, p.Delay(n), "attempt %d", n)
	}
	p.Jitter = nil
	for range 100 {
		d := p.Delay(3)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, 4*time.Second)
	}
}
