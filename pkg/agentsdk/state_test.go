package agentsdk

import (
	"context"
	"os"
	"path/filepath"
	"strings"
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
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), "."), "no temporary file left behind: %s", e.Name())
	}
	a, err = New(cfg)
	require.NoError(t, err)
	require.Equal(t, "kept-credential", a.cred)
}

// With a state directory the key pinned on first use is kept: a restarted
// agent refuses a gateway announcing another key instead of trusting it.
func TestTrustOnFirstUseKeptInStateDir(t *testing.T) {
	g := newGateway(t)
	first := g.signer.Load()
	cfg, runs, _ := countingConfig(g)
	cfg.TrustedKeys = nil
	cfg.TrustOnFirstUse = true
	cfg.StateDir = filepath.Join(t.TempDir(), "state")

	a, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	c := g.accept(t)
	c.welcome(t, "s1")
	c.command(t, "e1", "echo", map[string]string{"message": "pinned"})
	c.expectRuns(t, "e1", "pinned")
	c.resultAcked(t, a, "e1")
	cancel()
	require.NoError(t, <-done)
	st, err := os.Stat(filepath.Join(cfg.StateDir, statePinnedKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// The restarted agent reaches a gateway with another key first.
	second := newSigner(t)
	g.signer.Store(second)
	start(t, cfg)
	c = g.accept(t)
	c.welcome(t, "s2")
	c.sendCommand(t, signed(t, second, newCommand(t, "e2", "echo", map[string]string{"message": "impostor"})))
	c.expectRejected(t, "e2", rejectUnknownKey)
	c.sendCommand(t, signed(t, first, newCommand(t, "e3", "echo", map[string]string{"message": "still pinned"})))
	c.expectRuns(t, "e3", "still pinned")
	require.Equal(t, int32(2), runs.Load())

	// A corrupt pinned key is an error, not a silent re-pin.
	require.NoError(t, os.WriteFile(filepath.Join(cfg.StateDir, statePinnedKeyFile), []byte("not a key\n"), 0o600))
	_, err = New(cfg)
	require.ErrorContains(t, err, "pinned signing key")
}
