package dispatch

import (
	"sync"

	"github.com/viworks/backend-agent/pkg/store"
)

// commandFrames builds and signs the COMMAND frames of due with up to
// Config.Workers goroutines (signing is most of a dispatch's CPU): frames[i]
// and errs[i] are due[i]'s.
func (s *Scheduler) commandFrames(due []store.DueExecution) (frames [][]byte, errs []error) {
	frames, errs = make([][]byte, len(due)), make([]error, len(due))
	workers := min(s.cfg.Workers, len(due))
	if workers <= 1 {
		for i, d := range due {
			frames[i], errs[i] = s.commandFrame(d)
		}
		return frames, errs
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(due); i += workers {
				frames[i], errs[i] = s.commandFrame(due[i])
			}
		})
	}
	wg.Wait()
	return frames, errs
}
