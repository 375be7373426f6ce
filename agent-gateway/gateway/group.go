package gateway

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// group writes items that handshakes submit concurrently (agents marked
// online, audit events) in group commits: everything that arrives while a
// write is in flight goes into the next statement, so a connect storm costs a
// few round trips per batch instead of one commit per agent, and a lone item is
// written at once. Each submitter waits for its own write.
type group[T any] struct {
	name    string
	write   func(context.Context, []T) error
	log     logrus.FieldLogger
	in      chan groupItem[T]
	done    chan struct{}
	max     int
	writers int
	size    prometheus.Observer
	latency prometheus.Observer
}

type groupItem[T any] struct {
	ctx   context.Context // the submitter's: an item it gave up on is not written
	v     T
	reply chan error
}

func newGroup[T any](name string, write func(context.Context, []T) error, log logrus.FieldLogger, m *metrics) *group[T] {
	return &group[T]{
		name: name, write: write, log: log,
		in: make(chan groupItem[T], 1024), done: make(chan struct{}), max: 500, writers: 2,
		size: m.groupSize.WithLabelValues(name), latency: m.groupLatency.WithLabelValues(name),
	}
}

// submit queues v and waits until it is written (or the group stops).
func (g *group[T]) submit(ctx context.Context, v T) error {
	it := groupItem[T]{ctx: ctx, v: v, reply: make(chan error, 1)}
	select {
	case g.in <- it:
	case <-g.done:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-it.reply:
		return err
	case <-g.done: // stopped before writing it
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run writes batches with a few concurrent writers until ctx is done.
func (g *group[T]) run(ctx context.Context) {
	defer close(g.done)
	finished := make(chan struct{}, g.writers)
	for range g.writers {
		go func() {
			defer func() { finished <- struct{}{} }()
			for {
				var items []groupItem[T]
				select {
				case it := <-g.in:
					items = append(items, it)
				case <-ctx.Done():
					return
				}
			drain:
				for len(items) < g.max {
					select {
					case it := <-g.in:
						items = append(items, it)
					default:
						break drain
					}
				}
				g.flush(ctx, items)
			}
		}()
	}
	for range g.writers {
		<-finished
	}
}

func (g *group[T]) flush(ctx context.Context, queued []groupItem[T]) {
	// Items whose submitter gave up (a client that timed out) are dropped: it
	// was told they failed, and a late write must not overwrite a newer one
	// (an abandoned enrollment's credential after the retry's).
	items := queued[:0]
	for _, it := range queued {
		if err := it.ctx.Err(); err != nil {
			it.reply <- err
			continue
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return
	}
	vs := make([]T, len(items))
	for i, it := range items {
		vs[i] = it.v
	}
	start := time.Now()
	err := g.write(ctx, vs)
	g.latency.Observe(time.Since(start).Seconds())
	g.size.Observe(float64(len(items)))
	if err == nil || len(items) == 1 {
		for _, it := range items {
			it.reply <- err
		}
		return
	}
	// One bad item must not fail the others: write them one by one.
	g.log.WithError(err).WithFields(logrus.Fields{"group": g.name, "batch": len(items)}).Warn("group write failed; writing one by one")
	for i, it := range items {
		it.reply <- g.write(ctx, vs[i:i+1])
	}
}
