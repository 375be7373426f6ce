// Package ratelimittest is a conformance suite for ratelimit.Limiter
// implementations: Run(t, newLimiter), where newLimiter returns a limiter in a
// namespace of its own (for Redis: a fresh key prefix) and registers its
// cleanup with t.Cleanup.
package ratelimittest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// NewRedis returns a Redis limiter on the test Redis under prefix ("": a
// fresh one), with its own client, closed at cleanup.
func NewRedis(t *testing.T, prefix string) *ratelimit.Redis {
	t.Helper()
	url, fresh := testenv.Redis(t)
	if prefix == "" {
		prefix = fresh
	}
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	l, err := ratelimit.NewRedis(c, ratelimit.RedisConfig{KeyPrefix: prefix})
	require.NoError(t, err)
	return l
}

// Run runs the suite.
func Run(t *testing.T, newLimiter func(t *testing.T) ratelimit.Limiter) {
	t.Run("BurstThenDeny", func(t *testing.T) {
		l := newLimiter(t)
		ctx := context.Background()
		lim := ratelimit.Limit{Requests: 5, Window: time.Minute}
		for i := 0; i < 5; i++ {
			r, err := l.Allow(ctx, "k", lim)
			require.NoError(t, err)
			require.True(t, r.Allowed, "request %d", i)
			require.Equal(t, 5, r.Limit)
			require.Equal(t, 4-i, r.Remaining, "request %d", i)
			require.Greater(t, r.ResetAfter, time.Duration(0))
			require.LessOrEqual(t, r.ResetAfter, time.Minute)
		}
		r, err := l.Allow(ctx, "k", lim)
		require.NoError(t, err)
		require.False(t, r.Allowed)
		require.Equal(t, 0, r.Remaining)
		// One request is earned back every 12s.
		require.Greater(t, r.RetryAfter, 10*time.Second)
		require.LessOrEqual(t, r.RetryAfter, 12*time.Second)
	})
	t.Run("KeysAreIndependent", func(t *testing.T) {
		l := newLimiter(t)
		ctx := context.Background()
		lim := ratelimit.Limit{Requests: 1, Window: time.Minute}
		r, err := l.Allow(ctx, "a", lim)
		require.NoError(t, err)
		require.True(t, r.Allowed)
		r, err = l.Allow(ctx, "a", lim)
		require.NoError(t, err)
		require.False(t, r.Allowed)
		r, err = l.Allow(ctx, "b", lim)
		require.NoError(t, err)
		require.True(t, r.Allowed)
	})
	t.Run("RefillsOverTime", func(t *testing.T) {
		l := newLimiter(t)
		ctx := context.Background()
		lim := ratelimit.Limit{Requests: 2, Window: 200 * time.Millisecond}
		for i := 0; i < 2; i++ {
			r, err := l.Allow(ctx, "k", lim)
			require.NoError(t, err)
			require.True(t, r.Allowed)
		}
		r, err := l.Allow(ctx, "k", lim)
		require.NoError(t, err)
		require.False(t, r.Allowed)
		require.LessOrEqual(t, r.RetryAfter, 100*time.Millisecond)
		time.Sleep(r.RetryAfter + 20*time.Millisecond)
		r, err = l.Allow(ctx, "k", lim)
		require.NoError(t, err)
		require.True(t, r.Allowed)
	})
	t.Run("ConcurrentRequestsShareOneBudget", func(t *testing.T) {
		l := newLimiter(t)
		ctx := context.Background()
		lim := ratelimit.Limit{Requests: 10, Window: time.Hour}
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					r, err := l.Allow(ctx, "shared", lim)
					if err == nil && r.Allowed {
						allowed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		require.EqualValues(t, 10, allowed.Load())
	})
	t.Run("PeekCountsNothing", func(t *testing.T) {
		l := newLimiter(t)
		ctx := context.Background()
		lim := ratelimit.Limit{Requests: 2, Window: time.Minute}
		for range 5 {
			r, err := l.Peek(ctx, "k", lim)
			require.NoError(t, err)
			require.True(t, r.Allowed)
			require.Equal(t, 1, r.Remaining)
		}
		for range 2 {
			r, err := l.Allow(ctx, "k", lim)
			require.NoError(t, err)
			require.True(t, r.Allowed)
		}
		r, err := l.Peek(ctx, "k", lim)
		require.NoError(t, err)
		require.False(t, r.Allowed, "peek sees the budget spent")
		require.Greater(t, r.RetryAfter, time.Duration(0))
		_, err = l.Peek(ctx, "k", ratelimit.Limit{})
		require.Error(t, err)
	})
	t.Run("RejectsInvalidLimit", func(t *testing.T) {
		l := newLimiter(t)
		_, err := l.Allow(context.Background(), "k", ratelimit.Limit{Requests: 0, Window: time.Second})
		require.Error(t, err)
		_, err = l.Allow(context.Background(), "k", ratelimit.Limit{Requests: 1})
		require.Error(t, err)
	})
}
