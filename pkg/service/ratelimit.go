package service

import (
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/ratelimit"
)

// RateLimit is the API's limit per client and per principal
// (security.rate_limit_requests per security.rate_limit_window).
func RateLimit(cfg config.Config) ratelimit.Limit {
	return ratelimit.Limit{Requests: cfg.Security.RateLimitRequests, Window: cfg.RateLimitWindow()}
}

// RateLimiter keeps rate limits (the API's, the gateways' enrollment
// failures) in the process's Redis, shared by every replica, or in memory
// when the process has no Redis (all-in-one).
func RateLimiter(b bus.Backend) (ratelimit.Limiter, error) {
	if r, ok := b.(*bus.Redis); ok {
		return ratelimit.NewRedis(r.Client(), ratelimit.RedisConfig{KeyPrefix: r.KeyPrefix()})
	}
	return ratelimit.NewMemory(ratelimit.MemoryConfig{}), nil
}
