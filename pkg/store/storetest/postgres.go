package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// MigratedPostgres returns the URL of a fresh Postgres database for t with the
// schema already migrated: a copy of a template database migrated once per
// schema (testenv.PostgresFrom), instead of some twenty migrations per test.
func MigratedPostgres(t testing.TB) string {
	t.Helper()
	return testenv.PostgresFrom(t, store.SchemaDigest()[:16], func(ctx context.Context, url string) error {
		s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
		if err != nil {
			return fmt.Errorf("opening the template: %w", err)
		}
		defer func() { _ = s.Close() }()
		if _, err := s.Migrate(ctx); err != nil {
			return fmt.Errorf("migrating the template: %w", err)
		}
		return nil
	})
}
