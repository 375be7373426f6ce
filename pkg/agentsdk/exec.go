package agentsdk

import (
	"cmp"
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// execution is a command that was received and has no result yet.
type execution struct {
	state  string // protocol.AckReceived or protocol.AckStarted; guarded by Agent.mu
	cancel context.CancelCauseFunc
}

// outboxEntry is an encoded COMMAND_RESULT waiting for RESULT_ACK.
type outboxEntry struct {
	seq   uint64
	frame []byte
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

// pendingResults returns the outbox in the order results were produced.
// Called with a.mu held.
func (a *Agent) pendingResults() [][]byte {
	entries := make([]*outboxEntry, 0, len(a.outbox))
	for _, e := range a.outbox {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(x, y *outboxEntry) int { return cmp.Compare(x.seq, y.seq) })
	frames := make([][]byte, len(entries))
	for i, e := range entries {
		frames[i] = e.frame
	}
	return frames
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
	if err := checkID(id); err != nil {
		log.WithField("reason", "execution_id "+err.Error()).Warn("ignoring COMMAND without a valid execution_id")
		return
	}
	if cmd.AgentID != "" && cmd.AgentID != a.cfg.AgentID {
		log.WithField("target_agent_id", trunc(cmd.AgentID, protocol.MaxIDLen)).Warn("ignoring COMMAND addressed to another agent")
		return
	}

	a.mu.Lock()
	if e, ok := a.execs[id]; ok {
		state := e.state
		a.mu.Unlock()
		log.Debug("duplicate COMMAND for a running execution; acknowledged again")
		s.enqueue(a.ackFrame(id, state))
		return
	}
	if o, ok := a.outbox[id]; ok {
		frame := o.frame
		a.mu.Unlock()
		log.Debug("duplicate COMMAND for a finished execution; result sent again")
		s.enqueue(frame)
		return
	}
	if a.recent.has(id) {
		a.mu.Unlock()
		log.Debug("duplicate COMMAND for an acknowledged execution; acknowledged again")
		s.enqueue(a.ackFrame(id, protocol.AckReceived))
		return
	}
	hctx, cancel := context.WithCancelCause(ctx)
	e := &execution{state: protocol.AckReceived, cancel: cancel}
	a.execs[id] = e
	a.mu.Unlock()

	log.WithField("verb", trunc(cmd.Verb, protocol.MaxShortFieldLen)).Debug("command received")
	s.enqueue(a.ackFrame(id, protocol.AckReceived))
	a.handlers.Add(1)
	go a.execute(hctx, e, *cmd)
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
	r := protocol.CommandResult{
		ExecutionID: cmd.ExecutionID,
		CommandID:   cmd.CommandID,
		Status:      res.Status(),
		ExitCode:    res.ExitCode,
		Output:      truncateUTF8(res.Output, protocol.MaxOutputBytes),
		Error:       truncateUTF8(res.Error, protocol.MaxErrorBytes),
		StartedAt:   startedAt,
		FinishedAt:  finishedAt,
	}
	log := a.log.WithFields(logrus.Fields{
		"execution_id": cmd.ExecutionID,
		"command_id":   cmd.CommandID,
		"verb":         cmd.Verb,
		"status":       r.Status,
		"exit_code":    r.ExitCode,
		"duration_ms":  finishedAt.Sub(startedAt).Milliseconds(),
	})
	frame, err := protocol.Encode(protocol.TypeCommandResult, "", r)
	if err != nil {
		log.WithError(err).Error("encoding COMMAND_RESULT failed")
		return
	}
	a.mu.Lock()
	delete(a.execs, cmd.ExecutionID)
	a.outboxSeq++
	a.outbox[cmd.ExecutionID] = &outboxEntry{seq: a.outboxSeq, frame: frame}
	if len(a.outbox) > maxOutbox {
		a.evictOldest()
	}
	s := a.sess
	a.mu.Unlock()
	log.Info("command finished")
	if s != nil {
		s.enqueue(frame)
	}
}

// evictOldest drops the oldest unacknowledged result; called with a.mu held.
func (a *Agent) evictOldest() {
	var oldest string
	var seq uint64
	for id, e := range a.outbox {
		if oldest == "" || e.seq < seq {
			oldest, seq = id, e.seq
		}
	}
	delete(a.outbox, oldest)
	a.log.WithField("execution_id", oldest).Warn("result outbox full; dropped the oldest unacknowledged result")
}

func (a *Agent) handleResultAck(p *protocol.ResultAck) {
	a.mu.Lock()
	_, ok := a.outbox[p.ExecutionID]
	if ok {
		delete(a.outbox, p.ExecutionID)
		a.recent.add(p.ExecutionID)
	}
	a.mu.Unlock()
	if !ok {
		a.log.WithField("execution_id", trunc(p.ExecutionID, protocol.MaxIDLen)).Debug("RESULT_ACK for no pending result")
	}
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

// truncateUTF8 makes s valid UTF-8 and cuts it to at most n bytes on a rune
// boundary, so the gateway's length check holds after the JSON round trip.
func truncateUTF8(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
