package readcache

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// clock is a fake time.Now that tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// source counts its reads and answers the current version.
type source struct {
	reads   atomic.Int64
	version atomic.Int64
}

func (s *source) fill(context.Context) ([]byte, error) {
	s.reads.Add(1)
	return []byte(strconv.FormatInt(s.version.Load(), 10)), nil
}

func get(t *testing.T, c *Cache, key string, s *source) string {
	t.Helper()
	b, err := c.Get(context.Background(), key, s.fill)
	require.NoError(t, err)
	return string(b)
}

// An answer is served until the TTL since its read began, then read anew:
// a change nobody announces shows within the TTL.
func TestTTLBoundsStaleness(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	c := New(Config{TTL: time.Second, Now: clk.Now})
	var s source
	require.Equal(t, "0", get(t, c, "k", &s))
	s.version.Store(1) // changed in the database, no event
	clk.add(999 * time.Millisecond)
	require.Equal(t, "0", get(t, c, "k", &s), "within the TTL the answer is held")
	require.Equal(t, int64(1), s.reads.Load())
	clk.add(time.Millisecond)
	require.Equal(t, "1", get(t, c, "k", &s), "at the TTL it is read anew")
	require.Equal(t, int64(2), s.reads.Load())
	require.Equal(t, "0", get(t, c, "other", &source{}), "keys are apart")
}

// Invalidate makes the next Get read anew, at once.
func TestInvalidate(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	c := New(Config{Now: clk.Now})
	var s source
	require.Equal(t, "0", get(t, c, "k", &s))
	s.version.Store(1)
	c.Invalidate()
	require.Equal(t, "1", get(t, c, "k", &s))
	require.Equal(t, len("k")+len("1"), c.bytes, "the dropped answer's bytes are given back")
}

// A read in flight when Invalidate runs is given to its caller only.
func TestInvalidateDuringRead(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	c := New(Config{Now: clk.Now})
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan string)
	go func() {
		b, _ := c.Get(context.Background(), "k", func(context.Context) ([]byte, error) {
			close(started)
			<-release
			return []byte("old"), nil
		})
		done <- string(b)
	}()
	<-started
	c.Invalidate()
	close(release)
	require.Equal(t, "old", <-done)
	var s source
	s.version.Store(7)
	require.Equal(t, "7", get(t, c, "k", &s), "the read begun before Invalidate is not kept")
}

// Concurrent misses of one key share one read.
func TestConcurrentMissesShareOneRead(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	c := New(Config{Now: clk.Now})
	var reads atomic.Int64
	release := make(chan struct{})
	fill := func(context.Context) ([]byte, error) {
		reads.Add(1)
		<-release
		return []byte("page"), nil
	}
	const n = 50
	var wg sync.WaitGroup
	out := make([]string, n)
	first := make(chan struct{})
	go func() {
		b, _ := c.Get(context.Background(), "k", fill)
		out[0] = string(b)
		close(first)
	}()
	require.Eventually(t, func() bool { return reads.Load() == 1 }, 5*time.Second, time.Millisecond)
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := c.Get(context.Background(), "k", fill)
			if err != nil {
				b = []byte(err.Error())
			}
			out[i] = string(b)
		}()
	}
	close(release)
	wg.Wait()
	<-first
	require.Equal(t, int64(1), reads.Load())
	for _, o := range out {
		require.Equal(t, "page", o)
	}
}

// A failed read is not kept; one waiting on it reads for itself; a caller
// that gives up waiting gets its context's error.
func TestFailedReadIsNotKept(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	c := New(Config{Now: clk.Now})
	boom := errors.New("boom")
	_, err := c.Get(context.Background(), "k", func(context.Context) ([]byte, error) { return nil, boom })
	require.ErrorIs(t, err, boom)
	var s source
	require.Equal(t, "0", get(t, c, "k", &s))
	require.Equal(t, int64(1), s.reads.Load())

	c.Invalidate()
	release := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_, _ = c.Get(context.Background(), "k", func(context.Context) ([]byte, error) { close(started); <-release; return nil, boom })
	}()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Get(ctx, "k", s.fill)
	require.ErrorIs(t, err, context.Canceled)
	close(release)
}

// Answers beyond MaxBytes are served but not kept; expired ones make room.
func TestMaxBytes(t *testing.T) {
	clk := &clock{now: time.Unix(1000, 0)}
	c := New(Config{MaxBytes: 10, Now: clk.Now})
	var s source
	s.version.Store(12345678) // 8 bytes + key 1
	require.Equal(t, "12345678", get(t, c, "a", &s))
	require.Equal(t, "12345678", get(t, c, "b", &s), "no room: served, not kept")
	require.Equal(t, int64(2), s.reads.Load())
	require.Equal(t, "12345678", get(t, c, "b", &s))
	require.Equal(t, int64(3), s.reads.Load())
	require.Equal(t, "12345678", get(t, c, "a", &s), "a is kept")
	require.Equal(t, int64(3), s.reads.Load())
	clk.add(time.Second)
	require.Equal(t, "12345678", get(t, c, "b", &s), "a expired and made room")
	require.Equal(t, "12345678", get(t, c, "b", &s))
	require.Equal(t, int64(4), s.reads.Load())
	require.Equal(t, 9, c.bytes)
}
