package agentsdk

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/atomicfile"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// Subdirectories of Config.StateDir, one file <execution_id>.json each.
const (
	stateOutboxDir  = "outbox"  // results that wait for RESULT_ACK
	stateRunningDir = "running" // executions whose handler may be running
)

// runningRecord marks an execution accepted and not finished.
type runningRecord struct {
	CommandID  string    `json:"command_id"`
	Verb       string    `json:"verb"`
	ReceivedAt time.Time `json:"received_at"`
}

// outboxEntry is an encoded COMMAND_RESULT waiting for RESULT_ACK.
type outboxEntry struct {
	seq   uint64
	frame []byte
	sent  time.Time // last handed to a session; guarded by Agent.mu
}

// outboxRecord is one result of the outbox on disk.
type outboxRecord struct {
	Seq   uint64          `json:"seq"`
	Frame json.RawMessage `json:"frame"` // the COMMAND_RESULT frame as sent
}

// outboxDir is where results are kept on disk, "" when they are not.
func (a *Agent) outboxDir() string {
	if a.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(a.cfg.StateDir, stateOutboxDir)
}

// persistResult writes one result to the outbox on disk before it is sent,
// so it survives a crash or restart until RESULT_ACK. Execution ids are
// valid file names (protocol.CheckID: no "/", never only dots).
func (a *Agent) persistResult(executionID string, seq uint64, frame []byte) error {
	dir := a.outboxDir()
	if dir == "" {
		return nil
	}
	b, err := json.Marshal(outboxRecord{Seq: seq, Frame: frame})
	if err != nil {
		return fmt.Errorf("encoding the result for the outbox: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, executionID+".json"), b); err != nil {
		return fmt.Errorf("saving the result in the outbox: %w", err)
	}
	a.unmarkRunning(executionID)
	return nil
}

// markRunning records, before its handler starts, that an execution runs,
// so a process that ends before its result is stored leaves a trace.
func (a *Agent) markRunning(cmd protocol.Command, at time.Time) error {
	if a.cfg.StateDir == "" {
		return nil
	}
	b, err := json.Marshal(runningRecord{CommandID: cmd.CommandID, Verb: cmd.Verb, ReceivedAt: at})
	if err != nil {
		return fmt.Errorf("encoding the running mark: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(a.cfg.StateDir, stateRunningDir, cmd.ExecutionID+".json"), b); err != nil {
		return fmt.Errorf("saving the running mark: %w", err)
	}
	return nil
}

// unmarkRunning removes the mark once the result is stored.
func (a *Agent) unmarkRunning(executionID string) {
	if a.cfg.StateDir == "" {
		return
	}
	err := os.Remove(filepath.Join(a.cfg.StateDir, stateRunningDir, executionID+".json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.WithError(err).WithField("execution_id", executionID).Error("removing a running mark failed")
	}
}

// loadInterrupted turns the executions a previous process was running when
// it ended into failed results (ExitCodeInterrupted) in the outbox: they are
// reported, never run again. Called by New after loadOutbox.
func (a *Agent) loadInterrupted() error {
	dir := filepath.Join(a.cfg.StateDir, stateRunningDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the running directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading the running directory: %w", err)
	}
	now := time.Now().UTC()
	for _, de := range entries {
		name := de.Name()
		path := filepath.Join(dir, name)
		id, ok := strings.CutSuffix(name, ".json")
		if strings.HasPrefix(name, ".") || !ok || protocol.CheckID("", id) != nil {
			_ = os.Remove(path)
			continue
		}
		if _, done := a.outbox[id]; done {
			_ = os.Remove(path) // the result was stored just before the end
			continue
		}
		var rec runningRecord
		if b, err := os.ReadFile(path); err == nil {
			_ = json.Unmarshal(b, &rec)
		}
		startedAt := rec.ReceivedAt
		if startedAt.IsZero() {
			startedAt = now
		}
		a.log.WithFields(logrus.Fields{"execution_id": id, "verb": trunc(rec.Verb, protocol.MaxShortFieldLen)}).
			Warn("an execution was running when the previous agent process ended; reported as interrupted, not run again")
		a.storeResult(protocol.Command{ExecutionID: id, CommandID: rec.CommandID, Verb: rec.Verb},
			Result{ExitCode: ExitCodeInterrupted, Error: "interrupted: the agent stopped while this execution ran; it is not run again"},
			startedAt, now)
	}
	return nil
}

// forgetResult removes an acknowledged or dropped result from the outbox on
// disk.
func (a *Agent) forgetResult(executionID string) {
	dir := a.outboxDir()
	if dir == "" {
		return
	}
	err := os.Remove(filepath.Join(dir, executionID+".json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.WithError(err).WithField("execution_id", executionID).Error("removing a result from the outbox failed; it is sent again after a restart (the gateway answers duplicate)")
	}
}

// loadOutbox restores the results a previous process left unacknowledged;
// they are sent on the first session, oldest first. A file that is not a
// COMMAND_RESULT of its execution is logged and removed.
func (a *Agent) loadOutbox() error {
	dir := a.outboxDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the outbox directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading the outbox: %w", err)
	}
	for _, de := range entries {
		name := de.Name()
		path := filepath.Join(dir, name)
		if strings.HasPrefix(name, ".") {
			_ = os.Remove(path) // a temporary file of a write cut short
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || de.IsDir() {
			continue
		}
		seq, frame, err := readOutboxFile(path, id)
		if err != nil {
			a.log.WithError(err).WithField("file", path).Error("dropping an unreadable result from the outbox")
			_ = os.Remove(path)
			continue
		}
		a.outbox[id] = &outboxEntry{seq: seq, frame: frame}
		a.outboxSeq = max(a.outboxSeq, seq)
	}
	for len(a.outbox) > maxOutbox {
		a.evictOldest()
	}
	if len(a.outbox) > 0 {
		a.log.WithField("pending_results", len(a.outbox)).Info("results of a previous run wait for RESULT_ACK")
	}
	return nil
}

func readOutboxFile(path, executionID string) (uint64, []byte, error) {
	if err := protocol.CheckID("execution_id", executionID); err != nil {
		return 0, nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	var rec outboxRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return 0, nil, err
	}
	f, err := protocol.Decode(rec.Frame)
	if err != nil {
		return 0, nil, err
	}
	r, ok := f.Payload.(*protocol.CommandResult)
	if !ok || r.ExecutionID != executionID {
		return 0, nil, errors.New("not the COMMAND_RESULT of its execution")
	}
	return rec.Seq, rec.Frame, nil
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
	now := time.Now()
	for i, e := range entries {
		frames[i] = e.frame
		e.sent = now
	}
	return frames
}

// unacknowledged returns, oldest first, the results last sent before cutoff
// and marks them sent now: the gateway received them but did not confirm
// (its database write failed, say), so they go again on the same session
// rather than waiting for a reconnect. The gateway keeps the first result of
// an execution and acknowledges the copies.
func (a *Agent) unacknowledged(cutoff time.Time) [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	var entries []*outboxEntry
	for _, e := range a.outbox {
		if e.sent.Before(cutoff) {
			entries = append(entries, e)
		}
	}
	slices.SortFunc(entries, func(x, y *outboxEntry) int { return cmp.Compare(x.seq, y.seq) })
	frames := make([][]byte, len(entries))
	now := time.Now()
	for i, e := range entries {
		frames[i] = e.frame
		e.sent = now
	}
	return frames
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
	a.forgetResult(oldest)
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
		return
	}
	a.forgetResult(p.ExecutionID)
	switch p.Outcome {
	case protocol.OutcomeStored, protocol.OutcomeDuplicate, "": // "": a gateway older than outcomes
	default:
		// Not stored, and re-sending would not change that: dropped.
		a.log.WithFields(logrus.Fields{"execution_id": p.ExecutionID, "outcome": trunc(p.Outcome, 64)}).Warn("gateway did not store the result")
	}
}
