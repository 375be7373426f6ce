package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraScript applies GCRA atomically with the Redis server's clock, so every
// replica shares one state and one clock. KEYS[1]: the key; ARGV: window,
// requests and 1 to count an allowed request (0: only tell, for Peek). Times
// are microseconds. Returns {allowed, remaining, retry_after, reset_after}.
var gcraScript = redis.NewScript(`
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local count = ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = window / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local diff = now - (new_tat - window)
if diff < 0 then
  return {0, 0, math.ceil(-diff), math.ceil(tat - now)}
end
if count then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return {1, math.floor(diff / interval), 0, math.ceil(new_tat - now)}
`)

// RedisConfig configures a Redis limiter.
type RedisConfig struct {
	KeyPrefix string // prefixes every key (REDIS_KEY_PREFIX); default "viworks:"
}

// Redis is the Limiter shared by all replicas through Redis.
type Redis struct {
	client redis.Scripter
	prefix string
}

var _ Limiter = (*Redis)(nil)

// NewRedis builds a limiter on an existing client; keys live under
// KeyPrefix + "ratelimit:".
func NewRedis(client redis.Scripter, cfg RedisConfig) (*Redis, error) {
	if client == nil {
		return nil, errors.New("ratelimit: a redis client is required")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "viworks:"
	}
	return &Redis{client: client, prefix: cfg.KeyPrefix + "ratelimit:"}, nil
}

// Allow implements Limiter.
func (r *Redis) Allow(ctx context.Context, key string, l Limit) (Result, error) {
	return r.run(ctx, key, l, 1)
}

// Peek implements Limiter.
func (r *Redis) Peek(ctx context.Context, key string, l Limit) (Result, error) {
	return r.run(ctx, key, l, 0)
}

func (r *Redis) run(ctx context.Context, key string, l Limit, count int) (Result, error) {
	if err := l.Validate(); err != nil {
		return Result{}, err
	}
	v, err := gcraScript.Run(ctx, r.client, []string{r.prefix + key}, l.Window.Microseconds(), l.Requests, count).Int64Slice()
	if err != nil {
		return Result{}, fmt.Errorf("applying rate limit: %w", err)
	}
	if len(v) != 4 {
		return Result{}, fmt.Errorf("applying rate limit: unexpected script answer %v", v)
	}
	return Result{
		Allowed: v[0] == 1, Limit: l.Requests, Remaining: int(v[1]),
		RetryAfter: time.Duration(v[2]) * time.Microsecond, ResetAfter: time.Duration(v[3]) * time.Microsecond,
	}, nil
}
