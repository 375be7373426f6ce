package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func TestAgentCredentials(t *testing.T) { each(t, testAgentCredentials) }

func testAgentCredentials(t *testing.T, s *store.Store) {
	ctx := context.Background()
	_, err := s.AgentForCredential(ctx, "h1")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	require.NoError(t, s.SetAgentCredential(ctx, "a1", "h1", "bootstrap"))
	id, err := s.AgentForCredential(ctx, "h1")
	require.NoError(t, err)
	require.Equal(t, "a1", id)

	// Re-enrolling rotates: the old credential stops working.
	require.NoError(t, s.SetAgentCredential(ctx, "a1", "h2", "bootstrap"))
	_, err = s.AgentForCredential(ctx, "h1")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	id, err = s.AgentForCredential(ctx, "h2")
	require.NoError(t, err)
	require.Equal(t, "a1", id)

	ok, err := s.RevokeAgentCredential(ctx, "a1")
	require.NoError(t, err)
	require.True(t, ok)
	_, err = s.AgentForCredential(ctx, "h2")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	ok, err = s.RevokeAgentCredential(ctx, "a1")
	require.NoError(t, err)
	require.False(t, ok)

	// Enrolling again after a revocation works.
	require.NoError(t, s.SetAgentCredential(ctx, "a1", "h3", "bootstrap"))
	id, err = s.AgentForCredential(ctx, "h3")
	require.NoError(t, err)
	require.Equal(t, "a1", id)
}

func TestSetAgentCredentialsBatch(t *testing.T) { each(t, testSetAgentCredentialsBatch) }

func testSetAgentCredentialsBatch(t *testing.T, s *store.Store) {
	ctx := context.Background()
	require.NoError(t, s.SetAgentCredentials(ctx, nil))
	require.NoError(t, s.SetAgentCredential(ctx, "b1", "old", "bootstrap"))
	_, err := s.RevokeAgentCredential(ctx, "b1")
	require.NoError(t, err)
	// b1 twice in one batch: the last grant wins, and it clears the revocation.
	require.NoError(t, s.SetAgentCredentials(ctx, []store.CredentialGrant{
		{AgentID: "b1", CredentialHash: "first", EnrolledFrom: "bootstrap"},
		{AgentID: "b2", CredentialHash: "other", EnrolledFrom: "bootstrap"},
		{AgentID: "b1", CredentialHash: "second", EnrolledFrom: "bootstrap"},
	}))
	for hash, want := range map[string]string{"second": "b1", "other": "b2"} {
		id, err := s.AgentForCredential(ctx, hash)
		require.NoError(t, err)
		require.Equal(t, want, id)
	}
	for _, hash := range []string{"old", "first"} {
		_, err := s.AgentForCredential(ctx, hash)
		require.ErrorIs(t, err, store.ErrUnknownCredential)
	}
}
