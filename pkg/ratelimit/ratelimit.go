// Package ratelimit limits request rates with the generic cell rate algorithm
// (GCRA): a key may make Limit.Requests requests per Limit.Window, in bursts
// of up to Limit.Requests. Redis keeps the state shared by every replica; the
// memory implementation serves the one-process (all-in-one) mode.
package ratelimit

import (
	"context"
	"errors"
	"time"
)

// Limit is a rate: Requests per Window, with bursts of up to Requests.
type Limit struct {
	Requests int
	Window   time.Duration
}

// Validate reports a limit that cannot work.
func (l Limit) Validate() error {
	if l.Requests <= 0 {
		return errors.New("ratelimit: requests must be positive")
	}
	if l.Window < time.Millisecond {
		return errors.New("ratelimit: window must be at least 1ms")
	}
	return nil
}

// interval is the time one request "costs" (GCRA's emission interval).
func (l Limit) interval() time.Duration { return l.Window / time.Duration(l.Requests) }

// Result is the decision on one request.
type Result struct {
	Allowed    bool
	Limit      int           // Requests of the limit applied
	Remaining  int           // requests still allowed right now
	RetryAfter time.Duration // when denied: wait this long before the next request can pass
	ResetAfter time.Duration // until the full burst is available again
}

// Limiter decides whether a request of key may pass.
type Limiter interface {
	// Allow decides on one request and counts it when it passes.
	Allow(ctx context.Context, key string, l Limit) (Result, error)
	// Peek tells what Allow would decide now without counting anything:
	// for limits on failures, checked before the attempt and counted (with
	// Allow) only when it fails.
	Peek(ctx context.Context, key string, l Limit) (Result, error)
}

// gcra applies one request at now to the theoretical arrival time tat (zero:
// unknown key) and returns the decision and the new tat (unchanged when denied).
func gcra(now, tat time.Time, l Limit) (Result, time.Time) {
	interval := l.interval()
	if tat.Before(now) {
		tat = now
	}
	newTAT := tat.Add(interval)
	allowAt := newTAT.Add(-l.Window)
	diff := now.Sub(allowAt)
	if diff < 0 {
		return Result{Limit: l.Requests, RetryAfter: -diff, ResetAfter: tat.Sub(now)}, tat
	}
	return Result{Allowed: true, Limit: l.Requests, Remaining: int(diff / interval), ResetAfter: newTAT.Sub(now)}, newTAT
}
