package store

import (
	"context"
	"sync"
	"time"
)

// CommandChange is a command's new aggregate status.
type CommandChange struct {
	CommandID string
	Status    string
}

// ExecutionChange is an execution's new status, recorded by RecordBatch
// (running on an ack, succeeded or failed on a result).
type ExecutionChange struct {
	ExecutionID string
	CommandID   string
	AgentID     string
	Status      string
}

// ObserveCommands registers fn, called after every commit that changed the
// aggregate status of commands (results, sweeps, cancels, dispatch), with the
// new statuses; the roles publish them as events. Register it before the store
// is used; fn must not block for long.
func (s *Store) ObserveCommands(fn func(ctx context.Context, changes []CommandChange)) {
	s.observe = fn
}

// ObserveExecutions registers fn, called after every commit of RecordBatch
// with the executions it moved. Per command the order is causal: the
// execution changes of a batch are observed before the command change they
// lead to, also when another batch of this process (the gateway's concurrent
// writers) is the one that finalises the command. Register it before the
// store is used; fn must not block for long.
func (s *Store) ObserveExecutions(fn func(ctx context.Context, changes []ExecutionChange)) {
	s.observeExecutions = fn
}

func (s *Store) notify(ctx context.Context, changes []CommandChange) {
	if s.observe != nil && len(changes) > 0 {
		s.observe(context.WithoutCancel(ctx), changes)
	}
}

func (s *Store) notifyExecutions(ctx context.Context, changes []ExecutionChange) {
	if s.observeExecutions != nil && len(changes) > 0 {
		s.observeExecutions(context.WithoutCancel(ctx), changes)
	}
}

// batchObserveWait bounds how long a command change waits for the execution
// changes of concurrent batches (a batch's first transaction and its observer
// take milliseconds; a stuck one must not hold the stream back for long).
const batchObserveWait = 2 * time.Second

// batchOrder tracks the result batches between their start and the moment
// their execution changes were observed. A batch that changed commands' status
// waits, before it reports that, for every batch begun before: one of them may
// have committed the results this batch's refresh saw without having reported
// them yet.
type batchOrder struct {
	mu   sync.Mutex
	next uint64
	open map[uint64]chan struct{}
}

func (o *batchOrder) begin() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.open == nil {
		o.open = map[uint64]chan struct{}{}
	}
	o.next++
	o.open[o.next] = make(chan struct{})
	return o.next
}

// end marks seq observed; a second call is a no-op.
func (o *batchOrder) end(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ch, ok := o.open[seq]; ok {
		close(ch)
		delete(o.open, seq)
	}
}

// wait returns once every batch open now has been observed, or after max.
func (o *batchOrder) wait(ctx context.Context, max time.Duration) {
	o.mu.Lock()
	pending := make([]chan struct{}, 0, len(o.open))
	for _, ch := range o.open {
		pending = append(pending, ch)
	}
	o.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	timer := time.NewTimer(max)
	defer timer.Stop()
	for _, ch := range pending {
		select {
		case <-ch:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
