package dispatch

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/pkg/store"
)

// Whatever the number of workers, frames[i] is due[i]'s COMMAND, signed so
// that an agent verifies it, and a failure stays with its own execution.
func TestCommandFramesInParallel(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	signer, err := signing.NewSigner(priv)
	require.NoError(t, err)
	verifier := signing.NewVerifier(signer.PublicKeys())
	for _, tc := range []struct{ workers, due int }{
		{1, 5}, {4, 0}, {4, 1}, {4, 3}, {4, 100}, {7, 33}, {64, 10},
	} {
		t.Run(fmt.Sprintf("%d workers, %d executions", tc.workers, tc.due), func(t *testing.T) {
			s := &Scheduler{cfg: Config{Signer: signer, Workers: tc.workers}}
			due := make([]store.DueExecution, tc.due)
			for i := range due {
				due[i] = store.DueExecution{
					ExecutionID: fmt.Sprintf("exec-%03d", i), CommandID: "cmd-1", AgentID: fmt.Sprintf("agent-%03d", i),
					Verb: "echo", Args: store.JSON(`{"n":1}`), ExpiresAt: time.Now().Add(time.Hour), TimeoutSeconds: 60,
				}
				if i%10 == 9 { // sealed args and no keyring: this one fails
					due[i].ArgsSealed = true
				}
			}
			frames, errs := s.commandFrames(due)
			require.Len(t, frames, tc.due)
			require.Len(t, errs, tc.due)
			for i, d := range due {
				if d.ArgsSealed {
					require.ErrorContains(t, errs[i], "sealed", "execution %d", i)
					continue
				}
				require.NoError(t, errs[i])
				f, err := protocol.DecodeServerFrame(frames[i])
				require.NoError(t, err)
				require.Equal(t, protocol.TypeCommand, f.Type)
				cmd, ok := f.Payload.(*protocol.Command)
				require.True(t, ok, "payload %T", f.Payload)
				require.Equal(t, d.ExecutionID, cmd.ExecutionID)
				require.Equal(t, d.AgentID, cmd.AgentID)
				require.NoError(t, verifier.Verify(*cmd))
			}
		})
	}
}

// BenchmarkCommandFrames signs a dispatch batch of 100 COMMANDs with 1 and
// with 4 workers.
func BenchmarkCommandFrames(b *testing.B) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(b, err)
	signer, err := signing.NewSigner(priv)
	require.NoError(b, err)
	due := make([]store.DueExecution, 100)
	for i := range due {
		due[i] = store.DueExecution{ExecutionID: fmt.Sprintf("exec-%03d", i), CommandID: "cmd-1", AgentID: fmt.Sprintf("agent-%03d", i),
			Verb: "echo", Args: store.JSON(`{"message":"hello fleet"}`), ExpiresAt: time.Now().Add(time.Hour), TimeoutSeconds: 60}
	}
	for _, workers := range []int{1, 4} {
		b.Run(fmt.Sprint(workers, " workers"), func(b *testing.B) {
			s := &Scheduler{cfg: Config{Signer: signer, Workers: workers}}
			for b.Loop() {
				_, _ = s.commandFrames(due)
			}
		})
	}
}
