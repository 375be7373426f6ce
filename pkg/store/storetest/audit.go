package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func testAuditListFilters(t *testing.T, s *store.Store) {
	ctx := context.Background()
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	for i := 0; i < 7; i++ {
		actor := "alice"
		if i%2 == 1 {
			actor = "bob"
		}
		require.NoError(t, s.RecordAudit(ctx, store.AuditEvent{At: base.Add(time.Duration(i) * time.Minute), Actor: actor, Action: "act", Target: fmt.Sprint(i)}))
	}
	rows, next, err := s.ListAudit(ctx, store.AuditFilter{Actor: "alice", Page: store.Page{Limit: 3}})
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Equal(t, []string{"6", "4", "2"}, []string{rows[0].Target, rows[1].Target, rows[2].Target})
	require.NotEmpty(t, next)
	rows, next, err = s.ListAudit(ctx, store.AuditFilter{Actor: "alice", Page: store.Page{Limit: 3, Cursor: next}})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, "0", rows[0].Target)
	require.Empty(t, next)

	from, to := base.Add(2*time.Minute), base.Add(4*time.Minute)
	rows, _, err = s.ListAudit(ctx, store.AuditFilter{From: &from, To: &to})
	require.NoError(t, err)
	require.Len(t, rows, 2)
	require.Equal(t, "3", rows[0].Target)

	_, _, err = s.ListAudit(ctx, store.AuditFilter{Page: store.Page{Cursor: "bogus"}})
	require.ErrorIs(t, err, store.ErrBadCursor)
	_, _, err = s.ListAudit(ctx, store.AuditFilter{From: &to, To: &from})
	var verrs store.ValidationErrors
	require.ErrorAs(t, err, &verrs)
}
