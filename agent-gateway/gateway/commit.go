package gateway

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
)

// errStopped is returned to sessions once the committer has stopped.
var errStopped = errors.New("gateway is stopping")

// committer writes what the sessions report (acks, results) in group commits:
// everything that arrived while the previous write was in flight goes into one
// transaction, so batches grow with load and an idle gateway writes at once,
// never waiting for a timer. Each session waits for its own write, so a
// RESULT_ACK is only ever sent for a durable result.
type committer struct {
	store   Store
	bus     bus.Bus
	log     logrus.FieldLogger
	in      chan *job
	done    chan struct{}
	max     int
	writers int
	size    prometheus.Histogram
}

type job struct {
	ack    *store.Ack
	result *store.Result
	reply  chan jobReply
}

type jobReply struct {
	outcome store.ResultOutcome
	err     error
}

func newCommitter(st Store, b bus.Bus, log logrus.FieldLogger, size prometheus.Histogram) *committer {
	return &committer{store: st, bus: b, log: log, in: make(chan *job, 1024), done: make(chan struct{}), max: 500, writers: 4, size: size}
}

// enqueue queues j without waiting for its transaction (errors are logged).
func (c *committer) enqueue(ctx context.Context, j *job) {
	j.reply = make(chan jobReply, 1)
	select {
	case c.in <- j:
	case <-c.done:
	case <-ctx.Done():
	}
}

// submit queues j and waits for its transaction.
func (c *committer) submit(ctx context.Context, j *job) (store.ResultOutcome, error) {
	j.reply = make(chan jobReply, 1)
	select {
	case c.in <- j:
	case <-c.done:
		return store.ResultOutcome{}, errStopped
	case <-ctx.Done():
		return store.ResultOutcome{}, ctx.Err()
	}
	select {
	case r := <-j.reply:
		return r.outcome, r.err
	case <-ctx.Done():
		return store.ResultOutcome{}, ctx.Err()
	}
}

// run writes batches with a few concurrent writers until ctx is done.
func (c *committer) run(ctx context.Context) {
	defer close(c.done)
	finished := make(chan struct{}, c.writers)
	for range c.writers {
		go func() {
			defer func() { finished <- struct{}{} }()
			for {
				var jobs []*job
				select {
				case j := <-c.in:
					jobs = append(jobs, j)
				case <-ctx.Done():
					return
				}
			drain:
				for len(jobs) < c.max {
					select {
					case j := <-c.in:
						jobs = append(jobs, j)
					default:
						break drain
					}
				}
				c.write(ctx, jobs)
			}
		}()
	}
	for range c.writers {
		<-finished
	}
}

func (c *committer) write(ctx context.Context, jobs []*job) {
	c.size.Observe(float64(len(jobs)))
	if err := c.writeBatch(ctx, jobs); err == nil || len(jobs) == 1 {
		return
	}
	// One bad item must not fail the others: write them one by one.
	for _, j := range jobs {
		_ = c.writeBatch(ctx, []*job{j})
	}
}

func (c *committer) writeBatch(ctx context.Context, jobs []*job) error {
	var b store.Batch
	for _, j := range jobs {
		if j.ack != nil {
			b.Acks = append(b.Acks, *j.ack)
		}
		if j.result != nil {
			b.Results = append(b.Results, *j.result)
		}
	}
	out, err := c.store.RecordBatch(ctx, b)
	if err != nil {
		if len(jobs) == 1 {
			if jobs[0].result == nil {
				c.log.WithError(err).WithField("execution_id", jobs[0].ack.ExecutionID).Warn("recording ack failed")
			}
			jobs[0].reply <- jobReply{err: err}
		} else {
			c.log.WithError(err).WithField("batch", len(jobs)).Warn("group commit failed; writing one by one")
		}
		return err
	}
	if out.RefreshErr != nil {
		// The results are durable; the schedulers' sweep repairs the aggregate.
		c.log.WithError(out.RefreshErr).Warn("updating command status after results failed")
	}
	// The execution.status events of the batch are the store's to publish
	// (its observer, in commit order with the command changes they cause).
	i := 0
	var recorded []string
	for _, j := range jobs {
		var reply jobReply
		if j.result != nil {
			reply.outcome = out.Results[i]
			i++
			if reply.outcome.Recorded {
				recorded = append(recorded, reply.outcome.CommandID)
			}
		}
		j.reply <- reply
	}
	if len(recorded) > 0 {
		// One wake per batch: finished work frees capacity for the schedulers.
		wake := bus.Encode(bus.Wake{Reason: bus.WakeResult, CommandIDs: recorded})
		if _, err := c.bus.Publish(ctx, bus.TopicScheduler, wake); err != nil {
			c.log.WithError(err).Warn("waking schedulers failed")
		}
	}
	return nil
}
