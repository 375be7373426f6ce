package dispatch

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/pkg/store"
)

// commandFrames builds and signs the COMMAND frames of due: frames[i] and
// errs[i] are due[i]'s. What executions of one command share (args opened and
// canonicalised, the canonical bytes and the frame around the per-execution
// fields) is prepared once per command; the signatures, most of a dispatch's
// CPU, are then made by signWorkers goroutines.
func (s *Scheduler) commandFrames(due []store.DueExecution) (frames [][]byte, errs []error) {
	frames, errs = make([][]byte, len(due)), make([]error, len(due))
	now := time.Now().UTC() // issued_at of the whole batch
	byCommand := map[string]*preparedCommand{}
	prepared := make([]*preparedCommand, len(due))
	for i, d := range due {
		p, ok := byCommand[d.CommandID]
		if !ok {
			p = s.prepare(d, now)
			byCommand[d.CommandID] = p
		}
		prepared[i] = p
	}
	build := func(i int) {
		p, d := prepared[i], due[i]
		if p.err != nil {
			errs[i] = p.err
			return
		}
		n := nonce()
		sig, err := p.signer.Sign(d.ExecutionID, d.AgentID, n)
		if err != nil {
			errs[i] = fmt.Errorf("signing command: %w", err)
			return
		}
		frames[i] = p.frames.Encode(d.ExecutionID, d.AgentID, n, sig)
	}
	workers := min(s.signWorkers(), len(due))
	if workers <= 1 {
		for i := range due {
			build(i)
		}
		return frames, errs
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(due); i += workers {
				build(i)
			}
		})
	}
	wg.Wait()
	return frames, errs
}

// signWorkers is the number of goroutines signing a batch: Config.Workers,
// at most GOMAXPROCS (signing is CPU-bound: more goroutines than cores only
// queue).
func (s *Scheduler) signWorkers() int {
	return max(1, min(s.cfg.Workers, runtime.GOMAXPROCS(0)))
}

// preparedCommand is what the COMMAND frames of one command's executions in a
// batch share, or why none can be built.
type preparedCommand struct {
	signer *signing.Prepared
	frames *protocol.CommandFrames
	err    error
}

// prepare opens and canonicalises the args of d's command and encodes the
// fields its executions share; issued at now, expiring at the command's TTL
// or after its timeout, whichever comes first.
func (s *Scheduler) prepare(d store.DueExecution, now time.Time) *preparedCommand {
	expires := now.Add(time.Duration(d.TimeoutSeconds) * time.Second)
	if d.ExpiresAt.Before(expires) {
		expires = d.ExpiresAt
	}
	args := json.RawMessage(d.Args)
	if d.ArgsSealed {
		if s.cfg.Args == nil {
			return &preparedCommand{err: errors.New("the command's args are sealed and no args encryption key is configured")}
		}
		opened, err := s.cfg.Args.Open(args)
		if err != nil {
			return &preparedCommand{err: fmt.Errorf("opening sealed args: %w", err)}
		}
		args = opened
	}
	cmd := protocol.Command{
		CommandID: d.CommandID, Verb: d.Verb, Args: args, RequestedBy: d.CreatedBy,
		IssuedAt: now, ExpiresAt: expires, KeyID: s.cfg.Signer.KeyID(),
	}
	signer, err := s.cfg.Signer.Prepare(cmd)
	if err != nil {
		return &preparedCommand{err: fmt.Errorf("signing command: %w", err)}
	}
	frames, err := protocol.NewCommandFrames(cmd)
	if err != nil {
		return &preparedCommand{err: err}
	}
	return &preparedCommand{signer: signer, frames: frames}
}

func nonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
