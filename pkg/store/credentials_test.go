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
