package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
)

// TestSweepRepairsAnAggregateLeftBehind: results written without the
// aggregate update (a gateway died between the two) are repaired by the sweep.
func TestSweepRepairsAnAggregateLeftBehind(t *testing.T) { each(t, testSweepRepairs) }

func testSweepRepairs(t *testing.T, s *store.Store) {
	ctx := context.Background()
	storetest.Online(t, s, "r1", "gw1", "s1")
	cmd, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"r1"}}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
	require.NoError(t, err)
	require.NoError(t, s.ExecRawForTest(ctx, `UPDATE executions SET status = 'succeeded', finished_at = ? WHERE command_id = ?`, time.Now().UTC(), cmd.ID))
	got, _, err := s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandQueued, got.Status, "the aggregate was left behind")
	_, err = s.Sweep(ctx, time.Now(), store.RetryPolicy{Base: time.Second})
	require.NoError(t, err)
	got, _, err = s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandSucceeded, got.Status)
	require.NotNil(t, got.FinishedAt)
}
