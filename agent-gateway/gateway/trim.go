package gateway

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"
)

// trimAfter is how many handshakes make a storm worth a memory trim.
const trimAfter = 1000

// trimLoop returns the memory a connect storm used to the operating system
// once the storm is over. A storm's handshakes (HTTP requests, their
// goroutines and buffers, the database batches) need many times the memory the
// sessions then keep; the runtime would give it back only slowly, so the
// gateway's RSS would stay at the storm's peak. After at least trimAfter
// handshakes, the first second with no new handshake and none waiting runs one
// forced collection and returns the free pages (debug.FreeOSMemory).
func (g *Gateway) trimLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, trimmed := g.admitted.Load(), g.admitted.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := g.admitted.Load()
		quiet := n == last && g.waiting.Load() == 0 && len(g.admission) == 0
		last = n
		if quiet && n-trimmed >= trimAfter {
			trimmed = n
			start := time.Now()
			// One collection first: a pool's objects (frame buffers) survive
			// one as its victims; FreeOSMemory's own then frees them too.
			runtime.GC()
			debug.FreeOSMemory()
			g.log.WithField("duration", time.Since(start).String()).Debug("returned memory to the OS after a connect storm")
		}
	}
}
