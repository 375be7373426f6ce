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
			// Executions of three commands, interleaved as a claim returns
			// them; one command's args are sealed and there is no keyring.
			commands := []store.DueExecution{
				{CommandID: "cmd-1", Verb: "echo", Args: store.JSON(`{"n":1}`), CreatedBy: "alice", ExpiresAt: time.Now().Add(time.Hour), TimeoutSeconds: 60},
				{CommandID: "cmd-2", Verb: "run", Args: store.JSON(`{"z":"ü<&>","a":[null,1.50]}`), CreatedBy: "Zoë <ops@example.com>", ExpiresAt: time.Now().Add(time.Second), TimeoutSeconds: 600},
				{CommandID: "cmd-3", Verb: "echo", Args: store.JSON(`{"secret":"sealed"}`), ArgsSealed: true, ExpiresAt: time.Now().Add(time.Hour), TimeoutSeconds: 60},
			}
			due := make([]store.DueExecution, tc.due)
			for i := range due {
				due[i] = commands[i%len(commands)]
				due[i].ExecutionID, due[i].AgentID = fmt.Sprintf("exec-%03d", i), fmt.Sprintf("agent-%03d", i)
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
				// Byte for byte what signing and encoding it from scratch gives.
				ref := *cmd
				require.NoError(t, signer.Sign(&ref))
				want, err := protocol.Encode(protocol.TypeCommand, d.ExecutionID, ref)
				require.NoError(t, err)
				require.Equal(t, string(want), string(frames[i]))
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
