package apiserver

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/store"
)

// Rate limiting: every request is limited per client IP before it is
// authenticated (so floods of bad tokens cost one limiter call each; they are
// counted in memory and written as one "auth.failure" audit event per address
// and minute), and again per principal once authenticated. Both use
// cfg.RateLimit, in the shared Limiter (Redis across replicas). Every answer
// carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (seconds)
// of the tighter of the two; a denied request gets 429 with Retry-After.
//
// When the limiter fails (Redis unreachable) the two limits differ, each
// failure counted in viworks_api_ratelimit_errors_total{limit} with at most
// one warning per 10 s: the per-IP limit fails closed (503 with Retry-After),
// since it is what bounds floods of unauthenticated requests and bad tokens;
// the per-principal limit, reached only by a request that passed the per-IP
// limit and carries a valid token, fails open so authenticated clients are
// not cut off by an outage the per-IP limit already guards.

const ctxLimitRemaining = "ratelimit_remaining"

// validateProxies checks the trusted proxies (CIDRs or addresses).
func validateProxies(proxies []string) error {
	for _, p := range proxies {
		if _, _, err := net.ParseCIDR(p); err == nil {
			continue
		}
		if net.ParseIP(p) == nil {
			return fmt.Errorf("apiserver: trusted proxy %q is not a CIDR or an IP address", p)
		}
	}
	return nil
}

// clientContext tags the request with its client IP (X-Forwarded-For is
// honoured only from the trusted proxies) for the audit trail.
func (s *Server) clientContext(c *gin.Context) {
	ctx := store.WithAuditContext(c.Request.Context(), store.AuditContext{ClientIP: c.ClientIP(), RequestID: c.GetString(ctxRequestID)})
	c.Request = c.Request.WithContext(ctx)
	c.Next()
}

// limitByIP applies the per-address limit to every request but health checks
// (probes of load balancers and orchestrators must never get a 429).
func (s *Server) limitByIP(c *gin.Context) {
	if strings.HasPrefix(c.FullPath(), healthPrefix) {
		c.Next()
		return
	}
	if !s.applyLimit(c, limitIP, "ip:"+ipKey(c.ClientIP())) {
		c.Abort()
		return
	}
	c.Next()
}

// limitPrincipal applies the per-principal limit; it reports whether the
// request may go on (it wrote the 429 otherwise).
func (s *Server) limitPrincipal(c *gin.Context, subject string) bool {
	return s.applyLimit(c, limitPrincipal, "sub:"+subject)
}

// The two limits, as named in the metric.
const (
	limitIP        = "ip"        // fails closed
	limitPrincipal = "principal" // fails open
)

func (s *Server) applyLimit(c *gin.Context, limit, key string) bool {
	if s.limiter == nil {
		return true
	}
	res, err := s.limiter.Allow(c.Request.Context(), key, s.cfg.RateLimit)
	if err != nil {
		s.limitErrs.WithLabelValues(limit).Inc()
		failOpen := limit == limitPrincipal
		// At most one warning per 10 s: an outage must not turn every request into a log line.
		now := time.Now().UnixNano()
		if last := s.limiterErr.Load(); now-last > int64(10*time.Second) && s.limiterErr.CompareAndSwap(last, now) {
			s.log.WithError(err).WithFields(map[string]any{"request_id": c.GetString(ctxRequestID), "limit": limit, "let_through": failOpen}).
				Warn("rate limiter failed")
		}
		if !failOpen {
			c.Header("Retry-After", "2")
			writeProblem(c, http.StatusServiceUnavailable, "the rate limiter is unavailable; retry shortly", nil)
		}
		return failOpen
	}
	// Headers of the tightest limit that applied.
	if prev, ok := c.Get(ctxLimitRemaining); !ok || res.Remaining <= prev.(int) {
		c.Set(ctxLimitRemaining, res.Remaining)
		c.Header("RateLimit-Limit", strconv.Itoa(res.Limit))
		c.Header("RateLimit-Remaining", strconv.Itoa(res.Remaining))
		c.Header("RateLimit-Reset", strconv.Itoa(ceilSeconds(res.ResetAfter)))
		c.Header("RateLimit-Policy", fmt.Sprintf("%d;w=%d", res.Limit, ceilSeconds(s.cfg.RateLimit.Window)))
	}
	if !res.Allowed {
		c.Header("Retry-After", strconv.Itoa(max(1, ceilSeconds(res.RetryAfter))))
		writeProblem(c, http.StatusTooManyRequests, "rate limit exceeded; retry later", nil)
		return false
	}
	return true
}

// ipKey is the rate-limit key of a client address: IPv6 clients are counted
// per /64, the block one subscriber usually holds, so rotating addresses
// within it does not multiply the budget.
func ipKey(ip string) string {
	a := net.ParseIP(ip)
	if a == nil {
		return ip
	}
	if v4 := a.To4(); v4 != nil {
		return v4.String()
	}
	return a.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func ceilSeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

var errNoLimit = errors.New("apiserver: rate limit requests and window must both be set or both be zero")
