package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"
)

// An item whose submitter gave up while it waited in the group is not
// written, so it cannot overwrite what the retry wrote.
func TestGroupDropsAbandonedItems(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var written []string
	g := handshakeGroup("test", func(_ context.Context, vs []string) error {
		mu.Lock()
		defer mu.Unlock()
		written = append(written, vs...)
		return nil
	}, logrus.New(), newMetrics(nil))

	// The retry is queued first and the abandoned request after it: written
	// in one batch, the later item would win.
	retry := make(chan error, 1)
	go func() { _, err := g.submit(ctx, "retry"); retry <- err }()
	require.Eventually(t, func() bool { return len(g.in) == 1 }, 5*time.Second, time.Millisecond)
	abandoned, giveUp := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() { _, err := g.submit(abandoned, "abandoned"); first <- err }()
	require.Eventually(t, func() bool { return len(g.in) == 2 }, 5*time.Second, time.Millisecond, "queued before the group runs")
	giveUp()
	require.ErrorIs(t, <-first, context.Canceled)

	runCtx, stop := context.WithCancel(ctx)
	go g.run(runCtx)
	t.Cleanup(func() { stop(); <-g.done })
	require.NoError(t, <-retry)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"retry"}, written)
}

// Every submitter gets its own item's outcome, also when a bad item fails its
// batch and the group falls back to writing one by one; an unawaited item's
// failure is logged.
func TestGroupOutcomesPerItem(t *testing.T) {
	ctx := context.Background()
	errBad := errors.New("bad item")
	var mu sync.Mutex
	var batches [][]string
	log, hook := test.NewNullLogger()
	g := newGroup("test", 1, func(_ context.Context, vs []string) ([]string, error) {
		mu.Lock()
		batches = append(batches, slices.Clone(vs))
		mu.Unlock()
		if slices.Contains(vs, "bad") {
			return nil, errBad
		}
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = "stored " + v
		}
		return out, nil
	}, log, newMetrics(nil).batchSize, nil)

	// Queued before the group runs, so all land in the first batch.
	inputs := []string{"a", "bad", "b", "c"}
	type got struct {
		out string
		err error
	}
	results := make([]chan got, len(inputs))
	for i, v := range inputs {
		results[i] = make(chan got, 1)
		go func() { out, err := g.submit(ctx, v); results[i] <- got{out, err} }()
		require.Eventually(t, func() bool { return len(g.in) == i+1 }, 5*time.Second, time.Millisecond)
	}
	g.enqueue(ctx, "bad", log)
	runCtx, stop := context.WithCancel(ctx)
	go g.run(runCtx)
	t.Cleanup(func() { stop(); <-g.done })

	for i, v := range inputs {
		r := <-results[i]
		if v == "bad" {
			require.ErrorIs(t, r.err, errBad)
			continue
		}
		require.NoError(t, r.err)
		require.Equal(t, "stored "+v, r.out)
	}
	require.Eventually(t, func() bool {
		for _, e := range hook.AllEntries() {
			if e.Message == "group write of an unawaited item failed" {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"a", "bad", "b", "c", "bad"}, batches[0], "one batch while nothing was in flight")
	require.Len(t, batches, 1+5, "then each item alone")
}
