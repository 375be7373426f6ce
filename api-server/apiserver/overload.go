package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// Paths the in-flight bound and the request deadline leave alone: the health
// checks (probes must be answered while the API is busy) and the event
// stream (long-lived by design, bounded by events.HubConfig).
const (
	healthPrefix = "/api/v1/health"
	eventsPath   = "/api/v1/events"
)

// shedRetryAfter is the Retry-After of a request shed or past its deadline:
// seconds until a retry may find room.
const shedRetryAfter = "1"

// writeGrace is how long past its deadline a request may still take to write
// its answer (the 503 itself) to the client.
const writeGrace = 5 * time.Second

// exempt reports whether a request is left out of the in-flight bound and the
// request deadline.
func exempt(c *gin.Context) bool {
	p := c.FullPath()
	return strings.HasPrefix(p, healthPrefix) || p == eventsPath
}

// shed answers 503 with Retry-After at once when MaxInFlight requests are
// already in flight on this replica, or when a request finds no turn to run
// (MaxRunning) within QueueWait; both before any rate-limiter, token or
// database work, and counted (viworks_api_shed_requests_total).
func (s *Server) shed(c *gin.Context) {
	if exempt(c) {
		c.Next()
		return
	}
	select {
	case s.inFlight <- struct{}{}:
	default:
		s.shedCount.Inc()
		c.Header("Retry-After", shedRetryAfter)
		writeProblem(c, http.StatusServiceUnavailable,
			fmt.Sprintf("the server has %d requests in flight, its limit (server.max_connections); retry shortly", s.cfg.MaxInFlight), nil)
		c.Abort()
		return
	}
	defer func() { <-s.inFlight }()
	select {
	case s.running <- struct{}{}:
	default:
		// Every turn is taken: wait briefly for one rather than queue
		// behind all of max_connections.
		t := time.NewTimer(s.cfg.QueueWait)
		select {
		case s.running <- struct{}{}:
			t.Stop()
		case <-t.C:
			s.shedCount.Inc()
			c.Header("Retry-After", shedRetryAfter)
			writeProblem(c, http.StatusServiceUnavailable, "the server is busy; retry shortly", nil)
			c.Abort()
			return
		case <-c.Request.Context().Done():
			t.Stop()
			c.AbortWithStatus(statusClientClosed)
			return
		}
	}
	defer func() { <-s.running }()
	c.Next()
}

// defaultQueueWait is Config.QueueWait's default: under overload an admitted
// request waits at most this long for its turn.
const defaultQueueWait = 20 * time.Millisecond

// deadline gives the request's context the request deadline
// (server.request_timeout) and bounds writing its answer by it (plus
// writeGrace); a handler that returns past it without answering answers 503.
// The write deadline is cleared afterwards, so a keep-alive connection's next
// request (perhaps an event stream) starts afresh. No read deadline: one that
// fires while the handler runs cancels the connection's context (net/http),
// which would end the next request on that connection at once; the body is
// bounded by MaxBodyBytes and the headers by the server's ReadHeaderTimeout.
func (s *Server) deadline(c *gin.Context) {
	if exempt(c) {
		c.Next()
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RequestTimeout)
	defer cancel()
	end, _ := ctx.Deadline()
	c.Set(ctxDeadline, end)
	rc := http.NewResponseController(c.Writer)
	// Not every writer supports deadlines (tests' recorders); the context
	// deadline holds regardless.
	if rc.SetWriteDeadline(end.Add(writeGrace)) == nil {
		defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	}
	c.Request = c.Request.WithContext(ctx)
	c.Next()
	if !c.Writer.Written() && ctx.Err() != nil && pastDue(c) {
		s.pastDeadline(c)
	}
}

// ctxDeadline is the gin key of the request's deadline (a time.Time).
const ctxDeadline = "deadline"

// pastDue reports whether the request's deadline has passed.
func pastDue(c *gin.Context) bool {
	end, ok := c.Get(ctxDeadline)
	t, _ := end.(time.Time)
	return ok && !time.Now().Before(t)
}

// pastDeadline answers a request that ran out of its deadline.
func (s *Server) pastDeadline(c *gin.Context) {
	s.log.WithField("request_id", c.GetString(ctxRequestID)).WithField("timeout", s.cfg.RequestTimeout.String()).Warn("request exceeded the request timeout")
	c.Header("Retry-After", shedRetryAfter)
	writeProblem(c, http.StatusServiceUnavailable,
		fmt.Sprintf("the request took longer than %s (server.request_timeout); retry shortly", s.cfg.RequestTimeout), nil)
}

// statusClientClosed is recorded (metrics, log) for a request whose client
// went away before the answer, as nginx names it; nobody reads it.
const statusClientClosed = 499

// statusName is the metric label of an HTTP status code.
func statusName(code int) string {
	if code == statusClientClosed {
		return "Client Closed Request"
	}
	return http.StatusText(code)
}

// requestEnded answers a failed store call whose request context is done:
// past the deadline that is 503 (pastDeadline); a client that went away gets
// no answer (recorded as 499) and is logged at debug level, not as a
// database outage. It reports whether the context was done.
func (s *Server) requestEnded(c *gin.Context, err error) bool {
	ctxErr := c.Request.Context().Err()
	switch {
	case ctxErr == nil:
		return false
	case errors.Is(ctxErr, context.DeadlineExceeded), pastDue(c):
		s.pastDeadline(c)
	default:
		s.log.WithError(err).WithField("request_id", c.GetString(ctxRequestID)).Debug("client went away before the answer")
		c.AbortWithStatus(statusClientClosed)
	}
	return true
}
