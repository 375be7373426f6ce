package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// Upgrading keeps HELLO's former claims as reported and as trusted only what
// an enrollment secret imposed (simulated by undoing 0008 on a migrated
// database and writing rows as the old schema did).
func TestMigrateTrustedAttributes(t *testing.T) {
	each(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		for _, q := range []string{
			`ALTER TABLE agents DROP COLUMN reported_site`, `ALTER TABLE agents DROP COLUMN reported_labels`,
			`ALTER TABLE agents DROP COLUMN reported_capabilities`, `ALTER TABLE agents DROP COLUMN attributes_source`,
			`ALTER TABLE enrollment_secrets DROP COLUMN allowed_capabilities`, `ALTER TABLE agent_credentials DROP COLUMN allowed_capabilities`,
			`DELETE FROM schema_migrations WHERE version = 8`,
		} {
			require.NoError(t, s.ExecRawForTest(ctx, q), q)
		}
		now := time.Now().UTC()
		for _, id := range []string{"claimed", "imposed"} {
			require.NoError(t, s.ExecRawForTest(ctx, `INSERT INTO agents (id, status, site, version, hostname, os, arch, capabilities, labels,
  gateway_id, session_id, health_status, uptime_s, created_at, updated_at)
VALUES (?, 'offline', 'prod', '', '', '', '', '["exec"]', '{"tier":"db"}', '', '', '', 0, ?, ?)`, id, now, now))
		}
		require.NoError(t, s.ExecRawForTest(ctx, `INSERT INTO agent_credentials (agent_id, credential_hash, enrolled_at, enrolled_from, imposed_site, imposed_labels)
VALUES ('imposed', 'h', ?, 'secret:x', 'prod', '{"tier":"db"}')`, now))
		_, err := s.Migrate(ctx)
		require.NoError(t, err)

		claimed, err := s.GetAgent(ctx, "claimed")
		require.NoError(t, err)
		require.Equal(t, "", claimed.Site)
		require.Empty(t, claimed.Labels)
		require.Equal(t, "prod", claimed.ReportedSite)
		require.Equal(t, store.StringMap{"tier": "db"}, claimed.ReportedLabels)
		require.Equal(t, store.StringList{"exec"}, claimed.ReportedCapabilities)
		require.Equal(t, store.StringList{"exec"}, claimed.Capabilities)
		imposed, err := s.GetAgent(ctx, "imposed")
		require.NoError(t, err)
		require.Equal(t, "prod", imposed.Site)
		require.Equal(t, store.StringMap{"tier": "db"}, imposed.Labels)
		require.Equal(t, store.AttributesFromEnrollment, imposed.AttributesSource)
	})
}
