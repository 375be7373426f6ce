// Package readcache keeps the API's hot read answers (the agent list pages)
// in memory so that a replica asks the database for each at most once per
// TTL, however many clients ask.
//
// The bound on staleness is the TTL: an answer is served for at most TTL
// after the read that made it began, so a change committed in the database
// shows in every answer at most TTL later, even when nothing tells the cache
// of it. Changes the bus announces (Invalidate) show sooner. Concurrent
// misses of one key share one read.
package readcache

import (
	"context"
	"sync"
	"time"
)

// Defaults.
const (
	DefaultTTL      = time.Second
	DefaultMaxBytes = 64 << 20
)

// Config configures a Cache.
type Config struct {
	TTL      time.Duration    // how long an answer is served (default DefaultTTL; the staleness bound)
	MaxBytes int              // bound on the answers and keys held (default DefaultMaxBytes)
	Now      func() time.Time // the clock (default time.Now)
}

// Cache holds answers by key. The zero value is not usable; call New.
type Cache struct {
	cfg Config

	mu      sync.Mutex
	entries map[string]*entry
	bytes   int
}

type entry struct {
	at    time.Time     // when the read that made body began
	done  chan struct{} // closed when body and err are set
	body  []byte
	err   error
	bytes int
}

// New returns an empty cache.
func New(cfg Config) *Cache {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Cache{cfg: cfg, entries: map[string]*entry{}}
}

// TTL is the bound on staleness.
func (c *Cache) TTL() time.Duration { return c.cfg.TTL }

// Get returns the answer of key: the one held if it is younger than the TTL,
// else the one a read in flight since less than the TTL is making, else
// fill's, which it keeps unless Invalidate ran meanwhile.
// Errors are not kept: a failed fill is the caller's error, and a caller
// waiting on another's failed fill reads for itself.
func (c *Cache) Get(ctx context.Context, key string, fill func(context.Context) ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	now := c.cfg.Now()
	if e, ok := c.entries[key]; ok {
		select {
		case <-e.done:
			if now.Sub(e.at) < c.cfg.TTL {
				c.mu.Unlock()
				return e.body, nil
			}
			c.remove(key, e)
		default:
			c.mu.Unlock()
			if now.Sub(e.at) >= c.cfg.TTL { // a slow read began too long ago to share
				return fill(ctx)
			}
			select {
			case <-e.done:
				if e.err == nil {
					return e.body, nil
				}
				return fill(ctx)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	e := &entry{at: now, done: make(chan struct{})}
	c.entries[key] = e
	c.mu.Unlock()

	body, err := fill(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	e.body, e.err = body, err
	close(e.done)
	if c.entries[key] != e { // Invalidate ran meanwhile
		return body, err
	}
	e.bytes = len(key) + len(body)
	if err != nil || !c.makeRoom(e.bytes) {
		delete(c.entries, key)
		return body, err
	}
	c.bytes += e.bytes
	return body, err
}

// Invalidate drops every answer and every read in flight (which only its own
// caller gets): the next Get of each key reads anew.
func (c *Cache) Invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.entries {
		select {
		case <-e.done:
			c.remove(k, e)
		default: // a read in flight: its caller still gets it, nobody else
			delete(c.entries, k)
		}
	}
}

// remove drops a finished entry; mu is held.
func (c *Cache) remove(key string, e *entry) {
	delete(c.entries, key)
	c.bytes -= e.bytes
}

// makeRoom drops expired answers until n more bytes fit, reporting whether
// they do; mu is held.
func (c *Cache) makeRoom(n int) bool {
	if c.bytes+n <= c.cfg.MaxBytes {
		return true
	}
	now := c.cfg.Now()
	for k, e := range c.entries {
		select {
		case <-e.done:
			if now.Sub(e.at) >= c.cfg.TTL {
				c.remove(k, e)
			}
		default:
		}
	}
	return c.bytes+n <= c.cfg.MaxBytes
}
