package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func TestAuditChainConcurrentAppends(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := newDB(t)
			// Several stores (several processes' pools) append to one Postgres
			// chain; SQLite belongs to one process (one writer connection).
			nStores := 3
			if name == store.SQLite {
				nStores = 1
			}
			var stores []*store.Store
			for i := 0; i < nStores; i++ {
				s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url, MaxConns: 4})
				require.NoError(t, err)
				t.Cleanup(func() { _ = s.Close() })
				if i == 0 {
					_, err = s.Migrate(ctx)
					require.NoError(t, err)
				}
				stores = append(stores, s)
			}
			const perWorker, workers = 15, 6
			var wg sync.WaitGroup
			errs := make(chan error, workers*perWorker)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					s := stores[w%len(stores)]
					for i := 0; i < perWorker; i++ {
						errs <- s.RecordAudit(ctx, store.AuditEvent{
							Actor: fmt.Sprintf("worker-%d", w), Action: "test.append", Target: fmt.Sprint(i),
							ClientIP: "192.0.2.1", Details: []byte(`{"z": 1, "a": [1.50, "x<y"], "n": 12345678901234567890}`),
						})
					}
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			v, err := stores[len(stores)-1].VerifyAudit(ctx, nil)
			require.NoError(t, err)
			require.True(t, v.OK, "%+v", v)
			require.EqualValues(t, perWorker*workers, v.Checked)
			require.EqualValues(t, perWorker*workers, v.Head.Count)
		})
	}
}

func TestAuditChainDetectsTampering(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		for i := 0; i < 5; i++ {
			require.NoError(t, s.RecordAudit(ctx, store.AuditEvent{Actor: "admin", Action: "test.tamper", Target: fmt.Sprint(i)}))
		}
		rows, _, err := s.ListAudit(ctx, store.AuditFilter{Action: "test.tamper"})
		require.NoError(t, err)
		require.Len(t, rows, 5)
		victim := rows[2].ID // newest first: the third newest

		// The triggers refuse edits and deletes.
		require.Error(t, s.ExecRawForTest(ctx, `UPDATE audit_events SET actor = 'mallory' WHERE id = ?`, victim))
		require.Error(t, s.ExecRawForTest(ctx, `DELETE FROM audit_events WHERE id = ?`, victim))
		if s.Dialect() == store.Postgres {
			require.Error(t, s.ExecRawForTest(ctx, `TRUNCATE audit_events`))
		}
		v, err := s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.True(t, v.OK)

		// A superuser who gets past the triggers is caught by the chain.
		withoutTriggers(t, s, func() {
			require.NoError(t, s.ExecRawForTest(ctx, `UPDATE audit_events SET actor = 'mallory' WHERE id = ?`, victim))
		})
		v, err = s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.False(t, v.OK)
		require.Equal(t, victim, v.BrokenID)
		require.Contains(t, v.Reason, "hash does not match")
	})
}

func TestAuditChainDetectsDeletion(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		for i := 0; i < 4; i++ {
			require.NoError(t, s.RecordAudit(ctx, store.AuditEvent{Actor: "admin", Action: "test.delete", Target: fmt.Sprint(i)}))
		}
		rows, _, err := s.ListAudit(ctx, store.AuditFilter{})
		require.NoError(t, err)
		withoutTriggers(t, s, func() {
			require.NoError(t, s.ExecRawForTest(ctx, `DELETE FROM audit_events WHERE id = ?`, rows[2].ID))
		})
		v, err := s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.False(t, v.OK)
		require.Equal(t, rows[1].ID, v.BrokenID) // the row after the hole
		require.Contains(t, v.Reason, "prev_hash")
	})
}

// withoutTriggers runs fn with the append-only triggers out of the way, as a
// database superuser could.
func withoutTriggers(t *testing.T, s *store.Store, fn func()) {
	ctx := context.Background()
	if s.Dialect() == store.Postgres {
		require.NoError(t, s.ExecRawForTest(ctx, `ALTER TABLE audit_events DISABLE TRIGGER USER`))
		fn()
		require.NoError(t, s.ExecRawForTest(ctx, `ALTER TABLE audit_events ENABLE TRIGGER USER`))
		return
	}
	require.NoError(t, s.ExecRawForTest(ctx, `DROP TRIGGER audit_events_no_update`))
	require.NoError(t, s.ExecRawForTest(ctx, `DROP TRIGGER audit_events_no_delete`))
	fn()
}

// BenchmarkRecordAuditPostgres measures chained appends from parallel writers
// (they serialise on the chain lock).
func BenchmarkRecordAuditPostgres(b *testing.B) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: testenv.Postgres(b), MaxConns: 16})
	require.NoError(b, err)
	defer s.Close()
	_, err = s.Migrate(ctx)
	require.NoError(b, err)
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.RecordAudit(ctx, store.AuditEvent{Actor: "bench", Action: "bench.append", Details: []byte(`{"k":"v"}`)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func TestAuditChainStartsAfterLegacyRows(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		// Rows written before migration 0009 are legacy: undo it, write two
		// unkeyed rows, and migrate again.
		require.NoError(t, s.ExecRawForTest(ctx, `DROP TABLE audit_chain`))
		require.NoError(t, s.ExecRawForTest(ctx, `ALTER TABLE audit_events DROP COLUMN key_id`))
		require.NoError(t, s.ExecRawForTest(ctx, `DELETE FROM schema_migrations WHERE version = 9`))
		for i := 0; i < 2; i++ {
			require.NoError(t, s.ExecRawForTest(ctx, `INSERT INTO audit_events (at, actor, action, target, request_id, details, prev_hash, hash) VALUES (?, 'old', 'legacy', '', '', '{}', '', 'sha256-of-v1')`, time.Now().UTC()))
		}
		_, err := s.Migrate(ctx)
		require.NoError(t, err)
		for i := 0; i < 3; i++ {
			require.NoError(t, s.RecordAudit(ctx, store.AuditEvent{Actor: "new", Action: "chained"}))
		}
		v, err := s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.True(t, v.OK, "%+v", v)
		require.EqualValues(t, 3, v.Checked)
		require.EqualValues(t, 2, v.Legacy, "legacy rows are reported, not verified")
		require.EqualValues(t, 3, v.Head.KeyedFrom)

		// An unhashed row after the chain began is a break, not legacy.
		require.NoError(t, s.ExecRawForTest(ctx, `INSERT INTO audit_events (at, actor, action, target, request_id, details) VALUES (?, 'mallory', 'forged', '', '', '{}')`, time.Now().UTC()))
		v, err = s.VerifyAudit(ctx, nil)
		require.NoError(t, err)
		require.False(t, v.OK)
		rows, _, err := s.ListAudit(ctx, store.AuditFilter{Action: "forged"})
		require.NoError(t, err)
		require.Equal(t, rows[0].ID, v.BrokenID)
	})
}
