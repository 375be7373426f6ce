package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// Attacks on the audit trail by someone who can write to the database (past
// the triggers) but does not hold the audit key.

func appendN(t *testing.T, s *store.Store, action string, n int) []store.AuditEvent {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		require.NoError(t, s.RecordAudit(ctx, store.AuditEvent{Actor: "admin", Action: action, Target: fmt.Sprint(i)}))
	}
	rows, _, err := s.ListAudit(ctx, store.AuditFilter{Page: store.Page{Limit: 1000}})
	require.NoError(t, err)
	// oldest first
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	return rows
}

func TestAuditAttackRewriteAndRechain(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		rows := appendN(t, s, "test.rewrite", 6)
		// Rewrite the third row and recompute every later link, as the
		// attacker can with anything but the key.
		withoutTriggers(t, s, func() {
			prev := rows[1].Hash
			for i := 2; i < len(rows); i++ {
				r := rows[i]
				if i == 2 {
					r.Actor = "mallory"
				}
				r.PrevHash = prev
				r.Hash = forgeHash(t, r)
				require.NoError(t, s.ExecRawForTest(ctx, `UPDATE audit_events SET actor = ?, prev_hash = ?, hash = ? WHERE id = ?`, r.Actor, r.PrevHash, r.Hash, r.ID))
				prev = r.Hash
			}
		})
		v, err := s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.False(t, v.OK, "%+v", v)
		require.Equal(t, rows[2].ID, v.BrokenID)
	})
}

func TestAuditAttackBlankHashes(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		rows := appendN(t, s, "test.blank", 4)
		withoutTriggers(t, s, func() {
			require.NoError(t, s.ExecRawForTest(ctx, `UPDATE audit_events SET prev_hash = '', hash = ''`))
		})
		v, err := s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.False(t, v.OK, "%+v", v)
		require.Equal(t, rows[0].ID, v.BrokenID)
	})
}

func TestAuditAttackTruncateNewest(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		rows := appendN(t, s, "test.truncate", 5)
		kept := keptHead(t, s)
		withoutTriggers(t, s, func() {
			require.NoError(t, s.ExecRawForTest(ctx, `DELETE FROM audit_events WHERE id >= ?`, rows[3].ID))
		})
		v := verifyAgainst(t, s, kept)
		require.False(t, v.OK, "%+v", v)
		require.True(t, v.Truncated, "%+v", v)
	})
}

func TestAuditAttackTruncateAndRefill(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		rows := appendN(t, s, "test.refill", 4)
		kept := keptHead(t, s)
		require.True(t, verifyAgainst(t, s, kept).OK)
		// Cut the newest rows, then let the service append as many again: the
		// table's head catches up in count but the kept head's row is gone.
		withoutTriggers(t, s, func() {
			require.NoError(t, s.ExecRawForTest(ctx, `DELETE FROM audit_events WHERE id >= ?`, rows[2].ID))
		})
		appendN(t, s, "test.refill", 2)
		v := verifyAgainst(t, s, kept)
		require.False(t, v.OK, "%+v", v)
	})
}

func TestAuditAttackMoveChainStart(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		appendN(t, s, "test.start", 3)
		kept := keptHead(t, s)
		// Everything becomes "legacy" when the start moves past the rows.
		if s.Dialect() == store.Postgres {
			require.NoError(t, s.ExecRawForTest(ctx, `ALTER TABLE audit_chain DISABLE TRIGGER USER`))
		} else {
			require.NoError(t, s.ExecRawForTest(ctx, `DROP TRIGGER audit_chain_no_update`))
		}
		require.NoError(t, s.ExecRawForTest(ctx, `UPDATE audit_chain SET keyed_from = 1000`))
		v, err := s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.True(t, v.OK, "without a kept head the move shows only as legacy rows: %+v", v)
		require.EqualValues(t, 3, v.Legacy)
		v = verifyAgainst(t, s, kept)
		require.False(t, v.OK, "%+v", v)
		require.Contains(t, v.Reason, "start")
	})
}

func TestAuditKeptHeadMustBeSigned(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		appendN(t, s, "test.sig", 2)
		kept := keptHead(t, s)
		kept.Count-- // a forged, lower head would hide a truncation
		require.ErrorIs(t, s.CheckAuditHead(kept), store.ErrBadAuditHead)
		v := verifyAgainst(t, s, kept)
		require.False(t, v.OK)
		require.Contains(t, v.Reason, "signature")
	})
}

// After a rotation new rows chain under the new key and the rows under the
// previous key still verify while it is configured; without it they do not.
func TestAuditKeyRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.Postgres(t)
	oldKey, newKey := testenv.AuditKey, []byte("the-next-audit-key-0123456789abcdef0123")
	open := func(key []byte, previous ...[]byte) *store.Store {
		s, err := store.Open(ctx, store.Config{URL: url, AuditKey: key, PreviousAuditKeys: previous})
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	s1 := open(oldKey)
	_, err := s1.Migrate(ctx)
	require.NoError(t, err)
	appendN(t, s1, "test.rotate", 2)
	kept := keptHead(t, s1)

	s2 := open(newKey, oldKey)
	appendN(t, s2, "test.rotate", 2)
	v := verifyAgainst(t, s2, kept) // a head signed under the previous key is accepted
	require.True(t, v.OK, "%+v", v)
	require.EqualValues(t, 4, v.Checked)
	require.Equal(t, store.AuditKeyID(newKey), v.Head.KeyID)
	rows, _, err := s2.ListAudit(ctx, store.AuditFilter{Action: "test.rotate"})
	require.NoError(t, err)
	require.Equal(t, store.AuditKeyID(newKey), rows[0].KeyID)
	require.Equal(t, store.AuditKeyID(oldKey), rows[3].KeyID)

	s3 := open(newKey)
	v, err = s3.VerifyAudit(ctx, nil)
	require.NoError(t, err)
	require.False(t, v.OK)
	require.Equal(t, rows[3].ID, v.BrokenID)
	require.Contains(t, v.Reason, "key")

	_, err = store.Open(ctx, store.Config{URL: url, AuditKey: []byte("short")})
	require.ErrorContains(t, err, "audit key is shorter than 32 bytes")
}
