package agentsdk

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// A result the gateway did not acknowledge before the agent stopped is kept
// in the state directory and delivered by the next process, before anything
// else; a re-sent COMMAND of it is answered from there, not run; RESULT_ACK
// removes it for good.
func TestOutboxSurvivesRestart(t *testing.T) {
	g := newGateway(t)
	dir := filepath.Join(t.TempDir(), "state")
	cfg, runs, _ := countingConfig(g)
	cfg.StateDir = dir

	a, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	c := g.accept(t)
	c.welcome(t, "s1")
	cmd := signed(t, c.signer, newCommand(t, "e1", "echo", map[string]string{"message": "kept"}))
	c.sendCommand(t, cmd)
	c.expectRuns(t, "e1", "kept")
	file := filepath.Join(dir, stateOutboxDir, "e1.json")
	st, err := os.Stat(file)
	require.NoError(t, err, "the result is on disk once it was sent")
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	cancel() // no RESULT_ACK
	require.NoError(t, <-done)

	// A leftover temporary file and a file that is no result are dropped.
	junk := filepath.Join(dir, stateOutboxDir, "junk.json")
	require.NoError(t, os.WriteFile(junk, []byte(`{"seq":9,"frame":{"type":"HEARTBEAT"}}`), 0o600))
	tmp := filepath.Join(dir, stateOutboxDir, ".e1.json.tmp-123")
	require.NoError(t, os.WriteFile(tmp, []byte("torn"), 0o600))

	a2, cancel2 := start(t, cfg)
	require.Equal(t, 1, a2.PendingResults(), "the kept result is loaded, the junk is not")
	c = g.accept(t)
	c.welcome(t, "s2")
	r := c.expectResult(t, "e1")
	require.Equal(t, "kept", r.Output)
	c.sendCommand(t, signed(t, c.signer, newCommand(t, "e1", "echo", map[string]string{"message": "kept"})))
	require.Equal(t, "kept", c.expectResult(t, "e1").Output, "a re-sent COMMAND is answered from the outbox")
	c.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: "e1", Outcome: protocol.OutcomeStored})
	require.Eventually(t, func() bool { return a2.PendingResults() == 0 }, waitFor, 5*time.Millisecond)
	_, err = os.Stat(file)
	require.ErrorIs(t, err, os.ErrNotExist, "RESULT_ACK removes the result from disk")
	for _, p := range []string{junk, tmp} {
		_, err = os.Stat(p)
		require.ErrorIs(t, err, os.ErrNotExist, p)
	}
	cancel2()
	require.Equal(t, int32(1), runs.Load(), "the execution ran once")

	// A third start has nothing to send.
	a3, err := New(cfg)
	require.NoError(t, err)
	require.Equal(t, 0, a3.PendingResults())
}

// A refused COMMAND's result is kept on disk like any other.
func TestOutboxKeepsRejectedResult(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	a, _ := start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s1")
	cmd := newCommand(t, "bad", "echo", map[string]string{"message": "x"})
	cmd.AgentID = "someone-else"
	c.sendCommand(t, signed(t, c.signer, cmd))
	c.expectRejected(t, "bad", rejectWrongAgent)
	require.Equal(t, 1, a.PendingResults())
	_, err := os.Stat(filepath.Join(cfg.StateDir, stateOutboxDir, "bad.json"))
	require.NoError(t, err)
}

// An execution that was running when the process ended (here: a second
// process takes over the state directory while the first one's handler still
// blocks, as after kill -9) is reported failed as interrupted by the next
// process, and a re-sent COMMAND of it is answered with that result, not run.
func TestInterruptedExecutionReportedNotRerun(t *testing.T) {
	g := newGateway(t)
	dir := filepath.Join(t.TempDir(), "state")
	cfg := baseConfig(g)
	cfg.StateDir = dir
	release := make(chan struct{})
	var runs atomic.Int32
	cfg.Handlers = map[string]HandlerFunc{"block": func(ctx context.Context, _ protocol.Command) Result {
		runs.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return Result{Output: "late"}
	}}
	first, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	t.Cleanup(func() { close(release); cancel(); <-done })
	c := g.accept(t)
	c.welcome(t, "s1")
	cmd := signed(t, c.signer, newCommand(t, "e1", "block", map[string]string{}))
	c.sendCommand(t, cmd)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	_, err = os.Stat(filepath.Join(dir, stateRunningDir, "e1.json"))
	require.NoError(t, err, "the running mark is on disk before the handler runs")

	second, _ := start(t, cfg)
	require.Equal(t, 1, second.PendingResults())
	c2 := g.accept(t)
	c2.welcome(t, "s2")
	r := c2.expectResult(t, "e1")
	require.Equal(t, protocol.ResultFailed, r.Status)
	require.Equal(t, ExitCodeInterrupted, r.ExitCode)
	require.Equal(t, "interrupted: the agent stopped while this execution ran; it is not run again", r.Error)
	c2.sendCommand(t, signed(t, c2.signer, newCommand(t, "e1", "block", map[string]string{})))
	require.Equal(t, ExitCodeInterrupted, c2.expectResult(t, "e1").ExitCode, "answered from the outbox")
	require.Equal(t, int32(1), runs.Load(), "not run again")
	_, err = os.Stat(filepath.Join(dir, stateRunningDir, "e1.json"))
	require.ErrorIs(t, err, os.ErrNotExist, "the mark became a result")
}
