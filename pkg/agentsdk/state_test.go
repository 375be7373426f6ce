package agentsdk

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/atomicfile"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// A captured, validly signed COMMAND replayed after the agent restarted is
// not run again: the replay window is kept in the state directory.
func TestReplayAfterRestartRefused(t *testing.T) {
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
	captured := newCommand(t, "e1", "echo", map[string]string{"message": "once"})
	captured.Nonce = "captured-nonce"
	frame := signed(t, c.signer, captured)
	c.sendCommand(t, frame)
	c.expectRuns(t, "e1", "once")
	c.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: "e1"})
	require.Eventually(t, func() bool { return a.PendingResults() == 0 }, waitFor, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	st, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	st, err = os.Stat(filepath.Join(dir, stateNoncesFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// The restarted agent: the same frame is a duplicate, the same nonce for
	// another execution a replay; neither runs.
	start(t, cfg)
	c = g.accept(t)
	c.welcome(t, "s2")
	c.sendCommand(t, frame)
	c.expectAck(t, "e1", protocol.AckReceived)
	replay := captured
	replay.ExecutionID = "e2"
	c.sendCommand(t, signed(t, c.signer, replay))
	c.expectRejected(t, "e2", rejectNonceReplay)
	c.command(t, "probe", "echo", map[string]string{"message": "p"})
	c.expectRuns(t, "probe", "p")
	require.Equal(t, int32(2), runs.Load(), "the captured COMMAND ran once")
}

// The enrolled credential is kept in the state directory (0600, written
// atomically) and used after a restart instead of enrolling again.
func TestStateDirKeepsCredential(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", stateCredentialFile)
	cfg := Config{URL: "ws://127.0.0.1:1/ws/agent", AgentID: "a1", StateDir: filepath.Dir(path), InsecureSkipVerify: true}
	a, err := New(cfg)
	require.NoError(t, err)
	require.Empty(t, a.cred)
	require.NoError(t, atomicfile.Write(path, []byte("kept-credential\n")))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")
	a, err = New(cfg)
	require.NoError(t, err)
	require.Equal(t, "kept-credential", a.cred)
}
