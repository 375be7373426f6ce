package store_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func TestLeaderHandOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.Postgres(t)
	open := func() *store.Store {
		s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
		require.NoError(t, err)
		return s
	}
	a, b := open(), open()
	defer b.Close()

	la, err := a.TryLead(ctx, "maintenance")
	require.NoError(t, err)
	require.NotNil(t, la)
	require.NoError(t, la.Check(ctx))
	lb, err := b.TryLead(ctx, "maintenance")
	require.NoError(t, err)
	require.Nil(t, lb, "one leader at a time")
	other, err := b.TryLead(ctx, "another-role")
	require.NoError(t, err)
	require.NotNil(t, other, "names are independent")
	other.Release(ctx)

	// The leader's connection dies (as when its process is killed): the lease passes on.
	admin, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer admin.Close()
	_, err = admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return la.Check(ctx) != nil }, 5*time.Second, 20*time.Millisecond, "the old leader notices")
	defer a.Close()
	require.Eventually(t, func() bool {
		lb, err = b.TryLead(ctx, "maintenance")
		return err == nil && lb != nil
	}, 10*time.Second, 50*time.Millisecond)
	lb.Release(ctx)
}
