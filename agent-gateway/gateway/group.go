package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// errStopped is returned to submitters once a group has stopped.
var errStopped = errors.New("gateway is stopping")

// group is the gateway's one group-commit mechanism, for every write that
// many sessions make concurrently (acks and results, agents marked online,
// audit events): everything that arrives while a write is in flight goes into
// the next one, so batches grow with load (a connect storm costs a few round
// trips per batch instead of one commit per agent) and a lone item is written
// at once, never waiting for a timer. Each submitter waits for its own write
// and gets its own outcome (R), so nothing is acknowledged before it is
// durable.
type group[T, R any] struct {
	name string
	// write stores a batch in one transaction and returns one outcome per
	// item, in order (nil: every item's outcome is R's zero value).
	write   func(context.Context, []T) ([]R, error)
	log     logrus.FieldLogger
	in      chan groupItem[T, R]
	done    chan struct{}
	max     int
	writers int
	size    prometheus.Observer
	latency prometheus.Observer // nil: not measured
}

type groupItem[T, R any] struct {
	ctx    context.Context // the submitter's: an item it gave up on is not written
	v      T
	finish func(R, error) // called once, with the item's outcome
}

func newGroup[T, R any](name string, writers int, write func(context.Context, []T) ([]R, error), log logrus.FieldLogger, size, latency prometheus.Observer) *group[T, R] {
	return &group[T, R]{
		name: name, write: write, log: log,
		in: make(chan groupItem[T, R], 1024), done: make(chan struct{}), max: 500, writers: writers,
		size: size, latency: latency,
	}
}

// handshakeGroup is a group for the handshakes' writes, which have no
// per-item outcome, measured by the group metrics under its name.
func handshakeGroup[T any](name string, write func(context.Context, []T) error, log logrus.FieldLogger, m *metrics) *group[T, struct{}] {
	return newGroup(name, 2, func(ctx context.Context, vs []T) ([]struct{}, error) { return nil, write(ctx, vs) },
		log, m.groupSize.WithLabelValues(name), m.groupLatency.WithLabelValues(name))
}

// submit queues v and waits until it is written (or the group stops).
func (g *group[T, R]) submit(ctx context.Context, v T) (R, error) {
	type outcome struct {
		r   R
		err error
	}
	reply := make(chan outcome, 1)
	var zero R
	it := groupItem[T, R]{ctx: ctx, v: v, finish: func(r R, err error) { reply <- outcome{r, err} }}
	select {
	case g.in <- it:
	case <-g.done:
		return zero, errStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case o := <-reply:
		return o.r, o.err
	case <-g.done: // stopped before writing it
		return zero, errStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// enqueue queues v without waiting for its write; a failure is logged on log.
func (g *group[T, R]) enqueue(ctx context.Context, v T, log logrus.FieldLogger) {
	it := groupItem[T, R]{ctx: ctx, v: v, finish: func(_ R, err error) {
		if err != nil && ctx.Err() == nil {
			log.WithError(err).WithField("group", g.name).Warn("group write of an unawaited item failed")
		}
	}}
	select {
	case g.in <- it:
	case <-g.done:
	case <-ctx.Done():
	}
}

// run writes batches with a few concurrent writers until ctx is done.
func (g *group[T, R]) run(ctx context.Context) {
	defer close(g.done)
	finished := make(chan struct{}, g.writers)
	for range g.writers {
		go func() {
			defer func() { finished <- struct{}{} }()
			for {
				var items []groupItem[T, R]
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

func (g *group[T, R]) flush(ctx context.Context, queued []groupItem[T, R]) {
	// Items whose submitter gave up (a client that timed out) are dropped: it
	// was told they failed, and a late write must not overwrite a newer one
	// (an abandoned enrollment's credential after the retry's).
	var zero R
	items := queued[:0]
	for _, it := range queued {
		if err := it.ctx.Err(); err != nil {
			it.finish(zero, err)
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
	rs, err := g.write(ctx, vs)
	if g.latency != nil {
		g.latency.Observe(time.Since(start).Seconds())
	}
	g.size.Observe(float64(len(items)))
	if err == nil || len(items) == 1 {
		for i, it := range items {
			it.finish(outcomeAt(rs, i), err)
		}
		return
	}
	// One bad item must not fail the others: write them one by one.
	g.log.WithError(err).WithFields(logrus.Fields{"group": g.name, "batch": len(items)}).Warn("group write failed; writing one by one")
	for i, it := range items {
		rs, err := g.write(ctx, vs[i:i+1])
		it.finish(outcomeAt(rs, 0), err)
	}
}

// outcomeAt is rs[i], or R's zero value when the write returned no outcomes.
func outcomeAt[R any](rs []R, i int) R {
	if i < len(rs) {
		return rs[i]
	}
	var zero R
	return zero
}
