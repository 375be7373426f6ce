package gateway

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIssuedCreds(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var c issuedCreds

	_, ok := c.take("nothing", now)
	require.False(t, ok, "empty cache")

	c.put("h1", "a1", now)
	id, ok := c.take("h1", now.Add(time.Second))
	require.True(t, ok)
	require.Equal(t, "a1", id)
	_, ok = c.take("h1", now.Add(time.Second))
	require.False(t, ok, "used once")

	c.put("h2", "a2", now)
	_, ok = c.take("h2", now.Add(issuedTTL+time.Millisecond))
	require.False(t, ok, "expired")

	// Enrolling again replaces the agent's entry: the rotated credential is not served.
	c.put("h3", "a3", now)
	c.put("h4", "a3", now)
	_, ok = c.take("h3", now)
	require.False(t, ok, "rotated")
	id, ok = c.take("h4", now)
	require.True(t, ok)
	require.Equal(t, "a3", id)

	c.put("h5", "a5", now)
	c.sweep(now.Add(issuedTTL + time.Second))
	require.Empty(t, c.byHash)
	require.Empty(t, c.byAgent)
}
