package apiserver

import (
	"context"
	"sync"
	"time"
)

// probeEvery is how often at most the API pings the database to tell an
// outage from a failed statement (dbProbe).
const probeEvery = time.Second

// dbProbe tells whether the database is reachable for internalError. It pings
// at most once per probeEvery however many failing requests ask, so that a
// burst of slow or failing queries does not add a ping each at the worst
// moment; a request asking while a ping is in flight waits for that ping (up
// to its own context), one asking soon after takes its answer.
type dbProbe struct {
	ping    func(context.Context) error
	timeout time.Duration    // bound on one ping
	now     func() time.Time // the clock (tests move it)

	mu   sync.Mutex
	at   time.Time     // when the latest ping began; zero: none yet
	down bool          // the latest ping's answer
	wait chan struct{} // closed when the ping in flight ends; nil: none in flight
}

func newDBProbe(ping func(context.Context) error, timeout time.Duration) *dbProbe {
	return &dbProbe{ping: ping, timeout: timeout, now: time.Now}
}

// unreachable reports whether the latest ping, begun at most probeEvery ago
// (else begun now), failed.
func (p *dbProbe) unreachable(ctx context.Context) bool {
	p.mu.Lock()
	if p.wait == nil && !p.at.IsZero() && p.now().Sub(p.at) < probeEvery {
		down := p.down
		p.mu.Unlock()
		return down
	}
	if p.wait == nil {
		p.at, p.wait = p.now(), make(chan struct{})
		go p.run(p.wait) //nolint:gosec // G118: the ping is shared, so it outlives the request that began it; bounded by timeout
	}
	wait := p.wait
	p.mu.Unlock()
	select {
	case <-wait:
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// run pings once, detached from the request that asked (its client may leave).
func (p *dbProbe) run(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	err := p.ping(ctx)
	cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down, p.wait = err != nil, nil
	close(done)
}
