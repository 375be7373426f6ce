package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
)

// An item whose submitter gave up while it waited in the group is not
// written, so it cannot overwrite what the retry wrote.
func TestGroupDropsAbandonedItems(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var written []string
	g := newGroup("test", func(_ context.Context, vs []string) error {
		mu.Lock()
		defer mu.Unlock()
		written = append(written, vs...)
		return nil
	}, logrus.New(), newMetrics(nil))

	// The retry is queued first and the abandoned request after it: written
	// in one batch, the later item would win.
	retry := make(chan error, 1)
	go func() { retry <- g.submit(ctx, "retry") }()
	require.Eventually(t, func() bool { return len(g.in) == 1 }, 5*time.Second, time.Millisecond)
	abandoned, giveUp := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() { first <- g.submit(abandoned, "abandoned") }()
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
