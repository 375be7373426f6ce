package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/ratelimit/ratelimittest"
)

func TestMemoryConformance(t *testing.T) {
	ratelimittest.Run(t, func(t *testing.T) ratelimit.Limiter { return ratelimit.NewMemory(ratelimit.MemoryConfig{}) })
}

func TestRedisConformance(t *testing.T) {
	ratelimittest.Run(t, func(t *testing.T) ratelimit.Limiter { return ratelimittest.NewRedis(t, "") })
}

func TestMemoryEvictsIdleKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	m := ratelimit.NewMemory(ratelimit.MemoryConfig{MaxKeys: 2, Now: func() time.Time { return now }})
	lim := ratelimit.Limit{Requests: 1, Window: time.Second}
	ctx := context.Background()
	for _, k := range []string{"a", "b"} {
		r, err := m.Allow(ctx, k, lim)
		require.NoError(t, err)
		require.True(t, r.Allowed)
	}
	now = now.Add(2 * time.Second) // a and b are idle again
	r, err := m.Allow(ctx, "c", lim)
	require.NoError(t, err)
	require.True(t, r.Allowed)
	r, err = m.Allow(ctx, "c", lim)
	require.NoError(t, err)
	require.False(t, r.Allowed)
}
