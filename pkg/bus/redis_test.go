package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/bus/bustest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openRedis connects a Redis bus with the given prefix and closes it at cleanup.
func openRedis(t *testing.T, url, prefix string) *bus.Redis {
	t.Helper()
	b, err := bus.NewRedis(testCtx(t), bus.RedisConfig{URL: url, KeyPrefix: prefix, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// newRedisBus gives every caller a bus under a fresh key prefix.
func newRedisBus(t *testing.T) interface {
	bus.Bus
	bus.Presence
} {
	url, prefix := testenv.Redis(t)
	return openRedis(t, url, prefix)
}

func TestRedisConformance(t *testing.T) {
	bustest.Run(t, newRedisBus)
}

func receiveOne(t *testing.T, s bus.Subscription) bus.Message {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		require.True(t, ok, "subscription closed")
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	return bus.Message{}
}

func requireNothing(t *testing.T, s bus.Subscription) {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		t.Fatalf("unexpected delivery (open=%v) on %q: %q", ok, m.Topic, m.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestRedisPrefixIsolation checks that REDIS_KEY_PREFIX prefixes every key
// and channel, so installations sharing one Redis do not see each other.
func TestRedisPrefixIsolation(t *testing.T) {
	ctx := testCtx(t)
	url, prefixA := testenv.Redis(t)
	_, prefixB := testenv.Redis(t)
	require.NotEqual(t, prefixA, prefixB)

	a := openRedis(t, url, prefixA)
	a2 := openRedis(t, url, prefixA) // a second process of installation A
	b := openRedis(t, url, prefixB)

	topics := []string{bus.TopicScheduler, bus.GatewayTopic("gw-1")}
	subA, err := a.Subscribe(ctx, topics...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = subA.Close() })
	subB, err := b.Subscribe(ctx, topics...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = subB.Close() })

	t.Run("messages", func(t *testing.T) {
		cases := []struct {
			name    string
			from    *bus.Redis
			topic   string
			payload string
			to      bus.Subscription
			other   bus.Subscription
		}{
			{"A to A", a, bus.TopicScheduler, "a-wake", subA, subB},
			{"second A process to A", a2, bus.GatewayTopic("gw-1"), "a2-delivery", subA, subB},
			{"B to B", b, bus.TopicScheduler, "b-wake", subB, subA},
			{"B gateway to B", b, bus.GatewayTopic("gw-1"), "b-delivery", subB, subA},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				n, err := tc.from.Publish(ctx, tc.topic, []byte(tc.payload))
				require.NoError(t, err)
				require.Equal(t, 1, n, "only the same installation's subscriber is counted")
				m := receiveOne(t, tc.to)
				require.Equal(t, bus.Message{Topic: tc.topic, Payload: []byte(tc.payload)}, m)
				requireNothing(t, tc.other)
			})
		}
	})

	t.Run("presence", func(t *testing.T) {
		const agent = "gateway-001"
		eA := bus.Entry{GatewayID: "gw-a", SessionID: "s-a"}
		eB := bus.Entry{GatewayID: "gw-b", SessionID: "s-b"}

		prev, err := a.SetPresence(ctx, agent, eA, time.Minute)
		require.NoError(t, err)
		require.Nil(t, prev)

		got, err := b.LookupPresence(ctx, []string{agent})
		require.NoError(t, err)
		require.Empty(t, got, "B sees A's presence")

		prev, err = b.SetPresence(ctx, agent, eB, time.Minute)
		require.NoError(t, err)
		require.Nil(t, prev, "B's Set replaced A's entry")

		for _, c := range []struct {
			name string
			p    *bus.Redis
			want bus.Entry
		}{{"A", a, eA}, {"A2", a2, eA}, {"B", b, eB}} {
			got, err := c.p.LookupPresence(ctx, []string{agent})
			require.NoError(t, err)
			require.Equal(t, map[string]bus.Entry{agent: c.want}, got, c.name)
		}

		// A's session cannot refresh or delete B's entry and vice versa.
		ok, err := b.RefreshPresence(ctx, agent, eA, time.Minute)
		require.NoError(t, err)
		require.False(t, ok)
		ok, err = b.DeletePresence(ctx, agent, eA)
		require.NoError(t, err)
		require.False(t, ok)
		ok, err = a.DeletePresence(ctx, agent, eB)
		require.NoError(t, err)
		require.False(t, ok)

		// Deleting in A leaves B's entry.
		ok, err = a2.DeletePresence(ctx, agent, eA)
		require.NoError(t, err)
		require.True(t, ok)
		got, err = a.LookupPresence(ctx, []string{agent})
		require.NoError(t, err)
		require.Empty(t, got)
		got, err = b.LookupPresence(ctx, []string{agent})
		require.NoError(t, err)
		require.Equal(t, map[string]bus.Entry{agent: eB}, got)
	})

	t.Run("keys and channels carry the prefix", func(t *testing.T) {
		opts, err := redis.ParseURL(url)
		require.NoError(t, err)
		raw := redis.NewClient(opts)
		t.Cleanup(func() { _ = raw.Close() })

		_, err = a.SetPresence(ctx, "agent-key-check", bus.Entry{GatewayID: "g", SessionID: "s"}, time.Minute)
		require.NoError(t, err)
		keys, err := raw.Keys(ctx, prefixA+"*").Result()
		require.NoError(t, err)
		require.NotEmpty(t, keys)

		for _, p := range []string{prefixA, prefixB} {
			chans, err := raw.PubSubChannels(ctx, p+"*").Result()
			require.NoError(t, err)
			require.Len(t, chans, len(topics), "channels under %q: %v", p, chans)
		}
	})
}

func TestRedisConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  bus.RedisConfig
		ok   bool
	}{
		{"valid", bus.RedisConfig{URL: "redis://127.0.0.1:6379/0"}, true},
		{"valid with prefix", bus.RedisConfig{URL: "redis://127.0.0.1:6379/2", KeyPrefix: "x:"}, true},
		{"missing URL", bus.RedisConfig{}, false},
		{"wrong scheme", bus.RedisConfig{URL: "http://127.0.0.1:6379"}, false},
		{"bad database", bus.RedisConfig{URL: "redis://127.0.0.1:6379/notanumber"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			_, err = bus.NewRedis(testCtx(t), tc.cfg)
			require.Error(t, err, "NewRedis refuses an invalid config")
		})
	}
}

func TestRedisCloseIsIdempotent(t *testing.T) {
	url, prefix := testenv.Redis(t)
	b := openRedis(t, url, prefix)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	_, err := b.Publish(testCtx(t), "after-close", []byte("x"))
	require.ErrorIs(t, err, bus.ErrClosed, "a closed bus does not publish")
	_, err = b.Subscribe(testCtx(t), "after-close")
	require.ErrorIs(t, err, bus.ErrClosed)
}
