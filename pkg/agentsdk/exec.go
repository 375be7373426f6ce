package agentsdk

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// execution is a command that was received and has no result yet.
type execution struct {
	state  string // protocol.AckReceived or protocol.AckStarted; guarded by Agent.mu
	cancel context.CancelCauseFunc
}

// recentSet remembers the last recentSize acknowledged execution ids.
type recentSet struct {
	ring []string
	next int
	set  map[string]struct{}
}

func (r *recentSet) add(id string) {
	if _, ok := r.set[id]; ok {
		return
	}
	if len(r.ring) < recentSize {
		r.ring = append(r.ring, id)
	} else {
		delete(r.set, r.ring[r.next])
		r.ring[r.next] = id
		r.next = (r.next + 1) % recentSize
	}
	r.set[id] = struct{}{}
}

func (r *recentSet) has(id string) bool {
	_, ok := r.set[id]
	return ok
}

// send queues a frame on the current session, if there is one.
func (a *Agent) send(frame []byte) {
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	if s != nil {
		s.enqueue(frame)
	}
}

func (a *Agent) ackFrame(executionID, state string) []byte {
	f, err := protocol.Encode(protocol.TypeAck, "", protocol.Ack{ExecutionID: executionID, State: state})
	if err != nil {
		a.log.WithError(err).Error("encoding ACK failed")
		return nil
	}
	return f
}

func (a *Agent) handleCommand(ctx context.Context, s *session, cmd *protocol.Command) {
	id := cmd.ExecutionID
	log := a.log.WithFields(logrus.Fields{"execution_id": trunc(id, protocol.MaxIDLen), "command_id": trunc(cmd.CommandID, protocol.MaxIDLen)})
	if err := protocol.CheckID("", id); err != nil {
		log.WithField("reason", "execution_id "+err.Error()).Warn("ignoring COMMAND without a valid execution_id")
		return
	}

	// An execution already seen is never run again, whatever the frame
	// carries: the platform re-sends COMMANDs (re-signed, with a new nonce)
	// when an ACK or a result was lost.
	a.mu.Lock()
	if frame, msg := a.duplicate(cmd); msg != "" {
		a.mu.Unlock()
		log.Debug(msg)
		s.enqueue(frame)
		return
	}
	verifier := a.trust.verifier
	a.mu.Unlock()

	// Verified before ACK: a refused COMMAND gets a failed result, no ACK.
	// The signature is checked without holding a.mu (canonicalising large
	// args takes a while); handleCommand runs only on the session's read
	// loop, so no other COMMAND is admitted meanwhile.
	reason, err := a.checkCommand(cmd, verifier)
	a.mu.Lock()
	if reason == "" {
		reason = a.checkNonce(cmd)
	}
	if reason != "" {
		a.mu.Unlock()
		a.reject(*cmd, reason, err)
		return
	}
	a.nonces.add(cmd.Nonce, id, cmd.ExpiresAt)
	var window []nonceRecord
	if a.cfg.StateDir != "" {
		window = a.nonces.records()
	}
	hctx, cancel := context.WithCancelCause(ctx)
	e := &execution{state: protocol.AckReceived, cancel: cancel}
	a.execs[id] = e
	a.mu.Unlock()
	if window != nil {
		// Durable before anything runs: a replay of this frame after a
		// restart is then recognised. Only the read loop writes it.
		if err := a.saveNonces(window); err != nil {
			log.WithError(err).Error("saving the replay window failed; a replay of this COMMAND after a restart would not be recognised")
		}
		// So is the mark that it runs: a process ending before its result
		// is stored leaves an interrupted result, not a second run.
		if err := a.markRunning(*cmd, time.Now().UTC()); err != nil {
			log.WithError(err).Error("saving the running mark failed; if the agent dies while this runs, the execution is not reported")
		}
	}

	log.WithField("verb", trunc(cmd.Verb, protocol.MaxShortFieldLen)).Debug("command received")
	s.enqueue(a.ackFrame(id, protocol.AckReceived))
	a.handlers.Add(1)
	go a.execute(hctx, e, *cmd)
}

// duplicate returns what to answer for a COMMAND whose execution was already
// seen, with a log message; msg is "" for a new execution. Called with a.mu
// held.
func (a *Agent) duplicate(cmd *protocol.Command) (frame []byte, msg string) {
	id := cmd.ExecutionID
	if e, ok := a.execs[id]; ok {
		return a.ackFrame(id, e.state), "duplicate COMMAND for a running execution; acknowledged again"
	}
	if o, ok := a.outbox[id]; ok {
		return o.frame, "duplicate COMMAND for a finished execution; result sent again"
	}
	if prev, ok := a.nonces.lookup(cmd.Nonce); a.recent.has(id) || (ok && prev == id) {
		return a.ackFrame(id, protocol.AckReceived), "duplicate COMMAND for an acknowledged execution; acknowledged again"
	}
	return nil, ""
}

// execute waits for a concurrency slot, runs the handler and stores the result.
func (a *Agent) execute(ctx context.Context, e *execution, cmd protocol.Command) {
	defer a.handlers.Done()
	defer e.cancel(nil)
	var res Result
	startedAt := time.Now().UTC()
	select {
	case a.sem <- struct{}{}:
		startedAt = time.Now().UTC()
		a.mu.Lock()
		e.state = protocol.AckStarted
		a.mu.Unlock()
		a.send(a.ackFrame(cmd.ExecutionID, protocol.AckStarted))
		res = a.callHandler(ctx, cmd)
		<-a.sem
	case <-ctx.Done():
		res = Result{ExitCode: ExitCodeCancelled, Error: "cancelled before start: " + context.Cause(ctx).Error()}
	}
	a.finish(cmd, res, startedAt, time.Now().UTC())
}

func (a *Agent) callHandler(ctx context.Context, cmd protocol.Command) (res Result) {
	h, ok := a.cfg.Handlers[cmd.Verb]
	if !ok {
		return Result{ExitCode: ExitCodeUnknownVerb, Error: "unknown verb: " + cmd.Verb}
	}
	defer func() {
		if r := recover(); r != nil {
			// The panic value may hold command arguments (secrets): log its
			// type and the stack only.
			a.log.WithFields(logrus.Fields{
				"execution_id": cmd.ExecutionID,
				"verb":         cmd.Verb,
				"panic_type":   fmt.Sprintf("%T", r),
				"stack":        string(debug.Stack()),
			}).Error("handler panicked")
			res = Result{ExitCode: ExitCodeHandlerPanic, Error: "handler panicked"}
		}
	}()
	return h(ctx, cmd)
}

// finish moves an execution from running to the outbox and sends its result.
func (a *Agent) finish(cmd protocol.Command, res Result, startedAt, finishedAt time.Time) {
	status, ok := a.storeResult(cmd, res, startedAt, finishedAt)
	if !ok {
		return
	}
	a.log.WithFields(logrus.Fields{
		"execution_id": cmd.ExecutionID,
		"command_id":   cmd.CommandID,
		"verb":         cmd.Verb,
		"status":       status,
		"exit_code":    res.ExitCode,
		"duration_ms":  finishedAt.Sub(startedAt).Milliseconds(),
	}).Info("command finished")
}

// storeResult encodes the COMMAND_RESULT of an execution, moves the
// execution from running to the outbox and sends the result. It returns the
// result's status and whether it was stored.
func (a *Agent) storeResult(cmd protocol.Command, res Result, startedAt, finishedAt time.Time) (string, bool) {
	commandID := cmd.CommandID
	if protocol.CheckID("", commandID) != nil {
		commandID = "" // optional in the result; an invalid one would make the gateway refuse it
	}
	r := protocol.CommandResult{
		ExecutionID: cmd.ExecutionID,
		CommandID:   commandID,
		Status:      res.Status(),
		ExitCode:    res.ExitCode,
		StartedAt:   startedAt,
		FinishedAt:  finishedAt,
	}
	r.Output, r.OutputTruncated = protocol.Truncate(res.Output, protocol.MaxOutputBytes)
	r.OutputTruncated = r.OutputTruncated || res.OutputTruncated
	r.Error, _ = protocol.Truncate(res.Error, protocol.MaxErrorBytes)
	if r.OutputTruncated {
		a.log.WithFields(logrus.Fields{"execution_id": cmd.ExecutionID, "output_bytes": len(res.Output), "limit": protocol.MaxOutputBytes}).
			Warn("output longer than the protocol's output limit; sent cut and marked truncated")
	}
	frame, err := protocol.Encode(protocol.TypeCommandResult, "", r)
	if err != nil {
		a.log.WithError(err).WithField("execution_id", cmd.ExecutionID).Error("encoding COMMAND_RESULT failed")
		return r.Status, false
	}
	a.mu.Lock()
	a.outboxSeq++
	seq := a.outboxSeq
	a.mu.Unlock()
	// On disk before it is sent: a RESULT_ACK can then only remove a kept
	// result, and a result finished just before a crash is sent after it.
	if err := a.persistResult(cmd.ExecutionID, seq, frame); err != nil {
		a.log.WithError(err).WithField("execution_id", cmd.ExecutionID).Error("keeping the result on disk failed; it is kept in memory only")
	}
	a.mu.Lock()
	delete(a.execs, cmd.ExecutionID)
	a.outbox[cmd.ExecutionID] = &outboxEntry{seq: seq, frame: frame, sent: time.Now()}
	if len(a.outbox) > maxOutbox {
		a.evictOldest()
	}
	s := a.sess
	a.mu.Unlock()
	if s != nil {
		s.enqueue(frame)
	}
	return r.Status, true
}

func (a *Agent) handleCancel(p *protocol.Cancel) {
	a.mu.Lock()
	e, ok := a.execs[p.ExecutionID]
	a.mu.Unlock()
	log := a.log.WithField("execution_id", trunc(p.ExecutionID, protocol.MaxIDLen))
	if !ok {
		log.Debug("CANCEL for no running execution")
		return
	}
	cause := ErrCancelled
	if p.Reason != "" {
		cause = fmt.Errorf("%w: %s", ErrCancelled, trunc(p.Reason, protocol.MaxShortFieldLen))
	}
	log.Info("execution cancelled by the platform")
	e.cancel(cause)
}
