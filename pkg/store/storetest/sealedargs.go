package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/store"
)

// TestPurgeSealedArgs: the ciphertexts of a command's sealed args are removed
// once the command is final (here: cancelled, expired, succeeded), never
// while it may still be dispatched.
func testPurgeSealedArgs(t *testing.T, s *store.Store) {
	ctx := context.Background()
	raw := make([]byte, argseal.KeySize)
	_, _ = rand.Read(raw)
	keys, err := argseal.NewKeyring(hex.EncodeToString(raw))
	require.NoError(t, err)
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "p1", Capabilities: []string{"echo"}, GatewayID: "gw", SessionID: "s", At: time.Now()}))
	create := func(ttl int) store.Command {
		sealed, ok, err := keys.Seal([]byte(`{"user":"u","password":"pw-1"}`))
		require.NoError(t, err)
		require.True(t, ok)
		cmd, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Args: store.JSON(sealed), ArgsSealed: true,
			Targeting: store.Targeting{AgentIDs: []string{"p1"}}, TimeoutSeconds: 30, TTLSeconds: ttl, CreatedBy: "t",
			Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
		require.NoError(t, err)
		return cmd
	}
	open := create(3600)
	cancelled := create(3600)
	succeeded := create(3600)
	due, _, err := s.ClaimDue(ctx, store.ClaimOptions{Limit: 10}, func(context.Context, []string) (map[string]string, error) {
		return map[string]string{"p1": "gw"}, nil
	})
	require.NoError(t, err)
	for _, d := range due {
		require.True(t, d.ArgsSealed, "the scheduler learns to open them")
		if d.CommandID == succeeded.ID {
			_, _, err = s.RecordResult(ctx, store.Result{ExecutionID: d.ExecutionID, AgentID: "p1", Status: store.ExecSucceeded, FinishedAt: time.Now()})
			require.NoError(t, err)
		}
	}
	expiring := create(1) // queued, never dispatched: expires with its ttl
	_, err = s.CancelCommand(ctx, cancelled.ID, "t", "r")
	require.NoError(t, err)
	_, err = s.Sweep(ctx, time.Now().Add(2*time.Second), store.RetryPolicy{Base: time.Second})
	require.NoError(t, err)

	n, err := s.PurgeSealedArgs(ctx, 100)
	require.NoError(t, err)
	final := 0
	for _, c := range []store.Command{open, cancelled, expiring, succeeded} {
		got, _, err := s.GetCommand(ctx, c.ID)
		require.NoError(t, err)
		if got.FinishedAt == nil {
			require.True(t, got.ArgsSealed, got.Status)
			_, err := keys.Open(got.Args)
			require.NoError(t, err, "an unfinished command keeps its ciphertext")
			continue
		}
		final++
		require.False(t, got.ArgsSealed, got.Status)
		require.JSONEq(t, `{"user":"u","password":{"$sealed":"purged"}}`, string(got.Args), got.Status)
	}
	require.Equal(t, 3, final, "cancelled, expired and succeeded are final")
	require.Equal(t, final, n)
	n, err = s.PurgeSealedArgs(ctx, 100)
	require.NoError(t, err)
	require.Zero(t, n, "nothing left to purge")
}
