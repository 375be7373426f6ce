package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures the Redis bus.
type RedisConfig struct {
	URL          string
	KeyPrefix    string // prefixes every key and channel; default "viworks:"
	PoolSize     int
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
}

// Validate reports a configuration that cannot work.
func (c RedisConfig) Validate() error {
	if c.URL == "" {
		return errors.New("bus: redis URL is required")
	}
	if _, err := redis.ParseURL(c.URL); err != nil {
		return fmt.Errorf("bus: parsing redis URL: %w", err)
	}
	return nil
}

// Redis is the Redis implementation of Bus and Presence.
type Redis struct {
	client *redis.Client
	prefix string

	mu     sync.Mutex
	closed bool
}

var (
	_ Bus      = (*Redis)(nil)
	_ Presence = (*Redis)(nil)
)

// NewRedis connects to Redis and checks the connection.
func NewRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, _ := redis.ParseURL(cfg.URL)
	if cfg.PoolSize > 0 {
		opts.PoolSize = cfg.PoolSize
	}
	if cfg.DialTimeout > 0 {
		opts.DialTimeout = cfg.DialTimeout
	}
	if cfg.ReadTimeout > 0 {
		opts.ReadTimeout = cfg.ReadTimeout
	}
	if cfg.WriteTimeout > 0 {
		opts.WriteTimeout = cfg.WriteTimeout
	}
	prefix := cfg.KeyPrefix
	if prefix == "" {
		prefix = "viworks:"
	}
	c := redis.NewClient(opts)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("connecting to redis: %w", err)
	}
	return &Redis{client: c, prefix: prefix}, nil
}

// Client is the underlying client, for other features keeping shared state
// in the same Redis (the API's rate limiter).
func (r *Redis) Client() *redis.Client { return r.client }

// KeyPrefix is the prefix of every key (REDIS_KEY_PREFIX).
func (r *Redis) KeyPrefix() string { return r.prefix }

func (r *Redis) channel(topic string) string { return r.prefix + "bus:" + topic }
func (r *Redis) presenceKey(agentID string) string {
	return r.prefix + "presence:" + agentID
}

func (r *Redis) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Publish implements Bus.
func (r *Redis) Publish(ctx context.Context, topic string, payload []byte) (int, error) {
	if r.isClosed() {
		return 0, ErrClosed
	}
	n, err := r.client.Publish(ctx, r.channel(topic), payload).Result()
	if err != nil {
		return 0, fmt.Errorf("publishing to %s: %w", topic, err)
	}
	return int(n), nil
}

// Subscribe implements Bus. go-redis re-subscribes by itself after a reconnect.
func (r *Redis) Subscribe(ctx context.Context, topics ...string) (Subscription, error) {
	if r.isClosed() {
		return nil, ErrClosed
	}
	chans := make([]string, len(topics))
	for i, t := range topics {
		chans[i] = r.channel(t)
	}
	ps := r.client.Subscribe(ctx, chans...)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribing to %s: %w", strings.Join(topics, ","), err)
	}
	s := &redisSub{ps: ps, out: make(chan Message, 1024), prefix: r.prefix + "bus:"}
	go s.run()
	return s, nil
}

type redisSub struct {
	ps     *redis.PubSub
	out    chan Message
	prefix string
}

func (s *redisSub) run() {
	defer close(s.out)
	for m := range s.ps.Channel(redis.WithChannelSize(1024)) {
		s.out <- Message{Topic: strings.TrimPrefix(m.Channel, s.prefix), Payload: []byte(m.Payload)}
	}
}

func (s *redisSub) Messages() <-chan Message { return s.out }
func (s *redisSub) Close() error             { return s.ps.Close() }

// Ping implements Bus.
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

// Close implements Bus.
func (r *Redis) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.client.Close()
}

// SetPresence implements Presence.
func (r *Redis) SetPresence(ctx context.Context, agentID string, e Entry, ttl time.Duration) (*Entry, error) {
	old, err := r.client.SetArgs(ctx, r.presenceKey(agentID), encode(e), redis.SetArgs{TTL: ttl, Get: true}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("setting presence: %w", err)
	}
	var prev Entry
	if err := json.Unmarshal([]byte(old), &prev); err != nil {
		return nil, nil //nolint:nilerr // a corrupt old entry is simply replaced
	}
	return &prev, nil
}

// refreshScript extends the TTL only while the key still holds this session;
// it answers 1 (refreshed), 0 (missing) or -1 (another session's).
var refreshScript = redis.NewScript(`local v = redis.call("GET", KEYS[1])
if v == ARGV[1] then redis.call("PEXPIRE", KEYS[1], ARGV[2]) return 1 elseif v then return -1 else return 0 end`)

// deleteScript deletes the key only while it still holds this session.
var deleteScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`)

// RefreshPresence implements Presence.
func (r *Redis) RefreshPresence(ctx context.Context, agentID string, e Entry, ttl time.Duration) (bool, error) {
	n, err := refreshScript.Run(ctx, r.client, []string{r.presenceKey(agentID)}, encode(e), ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("refreshing presence: %w", err)
	}
	return Refresh(n) == Refreshed, nil
}

// RefreshPresences implements Presence with pipelined scripts, 1000 per round trip.
func (r *Redis) RefreshPresences(ctx context.Context, entries map[string]Entry, ttl time.Duration) (map[string]Refresh, error) {
	out := make(map[string]Refresh, len(entries))
	if len(entries) == 0 {
		return out, nil
	}
	if err := refreshScript.Load(ctx, r.client).Err(); err != nil {
		return nil, fmt.Errorf("loading presence script: %w", err)
	}
	ids := make([]string, 0, len(entries))
	for id := range entries {
		ids = append(ids, id)
	}
	const chunk = 1000
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		pipe := r.client.Pipeline()
		cmds := make([]*redis.Cmd, len(part))
		for i, id := range part {
			cmds[i] = refreshScript.EvalSha(ctx, pipe, []string{r.presenceKey(id)}, encode(entries[id]), ttl.Milliseconds())
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("refreshing presences: %w", err)
		}
		for i, id := range part {
			n, err := cmds[i].Int()
			if err != nil {
				return nil, fmt.Errorf("refreshing presences: %w", err)
			}
			out[id] = Refresh(n)
		}
	}
	return out, nil
}

// DeletePresence implements Presence.
func (r *Redis) DeletePresence(ctx context.Context, agentID string, e Entry) (bool, error) {
	n, err := deleteScript.Run(ctx, r.client, []string{r.presenceKey(agentID)}, encode(e)).Int()
	if err != nil {
		return false, fmt.Errorf("deleting presence: %w", err)
	}
	return n == 1, nil
}

// LookupPresence implements Presence.
func (r *Redis) LookupPresence(ctx context.Context, agentIDs []string) (map[string]Entry, error) {
	out := make(map[string]Entry, len(agentIDs))
	const chunk = 1000
	for start := 0; start < len(agentIDs); start += chunk {
		ids := agentIDs[start:min(start+chunk, len(agentIDs))]
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = r.presenceKey(id)
		}
		vals, err := r.client.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("looking up presence: %w", err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue
			}
			var e Entry
			if json.Unmarshal([]byte(s), &e) == nil {
				out[ids[i]] = e
			}
		}
	}
	return out, nil
}
