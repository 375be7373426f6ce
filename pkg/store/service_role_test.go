package store_test

import (
	"context"
	"database/sql"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// The services connect as a member of viworks_service (created by migration
// 0009), which owns nothing: it cannot get past the append-only triggers, nor
// change or remove audit rows, nor move the keyed chain's start; the store
// still works as that role.
func TestServiceRoleCannotRewriteTheAuditTrail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ownerURL := testenv.Postgres(t)
	owner, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: ownerURL})
	require.NoError(t, err)
	defer owner.Close()
	_, err = owner.Migrate(ctx)
	require.NoError(t, err)

	login := "viworks_svc_" + testenv.RandomSuffix(8)
	require.NoError(t, owner.ExecRawForTest(ctx, `CREATE ROLE `+login+` LOGIN IN ROLE viworks_service`))
	t.Cleanup(func() {
		_ = owner.ExecRawForTest(context.Background(), `DROP OWNED BY `+login)
		_ = owner.ExecRawForTest(context.Background(), `DROP ROLE `+login)
	})
	u, err := url.Parse(ownerURL)
	require.NoError(t, err)
	u.User = url.User(login)
	svcURL := u.String()

	svc, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: svcURL})
	require.NoError(t, err)
	defer svc.Close()
	require.NoError(t, svc.CheckSchema(ctx))
	require.NoError(t, svc.RecordAudit(ctx, store.AuditEvent{Actor: "admin", Action: "test.role"}))
	require.NoError(t, svc.RecordAudits(ctx, []store.AuditEvent{{Actor: "admin", Action: "test.role"}, {Actor: "admin", Action: "test.role"}}))
	require.NoError(t, svc.MarkAgentOnline(ctx, store.AgentSession{ID: "role-1", GatewayID: "g", SessionID: "s"}))

	db, err := sql.Open("pgx", svcURL)
	require.NoError(t, err)
	defer db.Close()
	for _, q := range []string{
		`ALTER TABLE audit_events DISABLE TRIGGER USER`,
		`ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change`,
		`DROP TRIGGER audit_events_no_change ON audit_events`,
		`ALTER TABLE audit_chain DISABLE TRIGGER USER`,
		`UPDATE audit_events SET actor = 'mallory'`,
		`DELETE FROM audit_events`,
		`TRUNCATE audit_events`,
		`UPDATE audit_chain SET keyed_from = 1000`,
		`INSERT INTO audit_chain (singleton, keyed_from) VALUES (false, 1000)`,
		`DELETE FROM audit_chain`,
		`SET session_replication_role = replica`, // would skip the triggers
	} {
		_, err := db.ExecContext(ctx, q)
		require.Error(t, err, "the service role may not: %s", q)
	}
	v, err := svc.VerifyAudit(ctx, nil)
	require.NoError(t, err)
	require.True(t, v.OK, "%+v", v)
	require.EqualValues(t, 3, v.Checked)
}
