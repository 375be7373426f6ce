package audithead_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/audithead"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// openStore returns a migrated store and a superuser connection to its database.
func openStore(t *testing.T) (*store.Store, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	url := testenv.Postgres(t)
	st, err := store.Open(ctx, store.Config{URL: url, AuditKey: testenv.AuditKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	db, err := sql.Open("pgx", url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return st, db
}

func keepers(t *testing.T) map[string]audithead.Keeper {
	url, prefix := testenv.Redis(t)
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	client := redis.NewClient(opt)
	t.Cleanup(func() { _ = client.Close() })
	return map[string]audithead.Keeper{
		"redis": audithead.NewRedis(client, prefix),
		"file":  audithead.NewFile(filepath.Join(t.TempDir(), "audit-head.json")),
	}
}

// Deleting the newest rows as a superuser (triggers disabled) is caught: the
// watcher keeps the higher head and reports the table behind it, and the
// verification against the kept head says "truncated".
func TestTruncationIsDetected(t *testing.T) {
	for name, k := range keepers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, db := openStore(t)
			log, hook := test.NewNullLogger()
			w, err := audithead.New(st, k, log, audithead.Config{Interval: time.Nanosecond, LogInterval: time.Nanosecond})
			require.NoError(t, err)
			kept, err := k.Load(ctx)
			require.NoError(t, err)
			require.Nil(t, kept)

			for i := range 5 {
				require.NoError(t, st.RecordAudit(ctx, store.AuditEvent{Actor: "admin", Action: "test.head", Target: string(rune('a' + i))}))
			}
			now := time.Now()
			require.NoError(t, w.Tick(ctx, now))
			kept, err = k.Load(ctx)
			require.NoError(t, err)
			require.NotNil(t, kept)
			require.EqualValues(t, 5, kept.Count)
			require.NoError(t, st.CheckAuditHead(*kept))
			require.Equal(t, "audit chain head", hook.LastEntry().Message)
			require.EqualValues(t, 5, hook.LastEntry().Data["count"])

			for _, q := range []string{`ALTER TABLE audit_events DISABLE TRIGGER USER`, `DELETE FROM audit_events WHERE id > ` + strconv.FormatInt(kept.LastID-2, 10), `ALTER TABLE audit_events ENABLE TRIGGER USER`} {
				_, err := db.ExecContext(ctx, q)
				require.NoError(t, err)
			}

			hook.Reset()
			require.NoError(t, w.Tick(ctx, now.Add(time.Second)))
			var behind bool
			for _, e := range hook.AllEntries() {
				behind = behind || (e.Level == logrus.ErrorLevel && e.Message == "audit chain head is behind the highest head seen")
			}
			require.True(t, behind, "the watcher reports the table behind")
			again, err := k.Load(ctx)
			require.NoError(t, err)
			require.Equal(t, kept.LastID, again.LastID, "the kept head is not lowered")

			v, err := st.VerifyAudit(ctx, again)
			require.NoError(t, err)
			require.False(t, v.OK)
			require.True(t, v.Truncated)
			require.EqualValues(t, 3, v.Head.Count)
		})
	}
}

func TestKeepersKeepTheHighest(t *testing.T) {
	for name, k := range keepers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			hi := store.AuditHead{LastID: 10, Count: 10, Hash: "h10"}
			got, err := k.Raise(ctx, hi)
			require.NoError(t, err)
			require.Equal(t, hi.Hash, got.Hash)
			got, err = k.Raise(ctx, store.AuditHead{LastID: 7, Count: 7, Hash: "h7"})
			require.NoError(t, err)
			require.Equal(t, "h10", got.Hash)
			got, err = k.Raise(ctx, store.AuditHead{LastID: 12, Count: 11, Hash: "h12"})
			require.NoError(t, err)
			require.Equal(t, "h12", got.Hash)
		})
	}
}

func TestNewValidates(t *testing.T) {
	_, err := audithead.New(nil, nil, nil, audithead.Config{})
	require.Error(t, err)
	_, err = audithead.New(nil, audithead.NewFile("x"), nil, audithead.Config{Interval: time.Hour, LogInterval: time.Minute})
	require.ErrorContains(t, err, "log interval")
}
