package store_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// A migration that arrives after a newer one was applied (numbers reserved by
// branches merged in another order) makes the database behind, and the next
// Migrate applies just that one. Simulated by undoing 0003 (it only creates
// agent_credentials) under the newer 0005.
func TestMigrateAppliesAVersionBelowTheNewest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.Postgres(t)
	s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Migrate(ctx)
	require.NoError(t, err)
	require.NoError(t, s.CheckSchema(ctx))
	require.Contains(t, store.MigrationVersions(store.Postgres), 3)
	require.Greater(t, store.LatestVersion(), 3)

	db, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.ExecContext(ctx, `DROP TABLE agent_credentials`)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version = 3`)
	require.NoError(t, err)

	err = s.CheckSchema(ctx)
	require.ErrorIs(t, err, store.ErrSchemaBehind)
	require.Contains(t, err.Error(), "missing [3]")
	applied, err := s.Migrate(ctx)
	require.NoError(t, err)
	require.Equal(t, []int{3}, applied)
	require.NoError(t, s.CheckSchema(ctx))
	var n int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM agent_credentials`).Scan(&n))
}
