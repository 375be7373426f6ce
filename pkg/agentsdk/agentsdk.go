// Package agentsdk is the library OS-agent authors use to talk to the platform
// over the agent protocol (docs/protocol.md).
//
// An Agent keeps one WebSocket session to a gateway, reconnecting with
// exponential backoff and full jitter, sends HELLO, HEARTBEAT and TELEMETRY,
// runs COMMANDs through the registered handlers and reports their results. A
// result stays in an outbox until the gateway confirms it with RESULT_ACK, and
// is sent again after every reconnect and, on the same session, after every
// heartbeat interval without that confirmation, so a result survives lost bus
// messages, dropped connections and failed writes on the gateway. With
// Config.StateDir the outbox is kept on disk (each result written before it
// is sent, removed on RESULT_ACK), so a result also survives a restart or a
// kill of the agent and is delivered by the next process.
//
// Every COMMAND is verified before it is acknowledged or run: its Ed25519
// signature (package signing) by a trusted platform key, its target agent id,
// its validity window and its nonce. A refused COMMAND is answered with a
// failed COMMAND_RESULT (exit code ExitCodeRejected) and never run. See
// Config.TrustedKeys and docs/protocol.md.
//
//	a, err := agentsdk.New(agentsdk.Config{
//		URL:         "wss://gateway.example/ws/agent",
//		AgentID:     "web-01",
//		Credential:  token,
//		TrustedKeys: map[string]ed25519.PublicKey{signing.KeyID(platformKey): platformKey},
//		Handlers: map[string]agentsdk.HandlerFunc{
//			"echo": func(ctx context.Context, cmd protocol.Command) agentsdk.Result {
//				return agentsdk.Result{Output: string(cmd.Args)}
//			},
//		},
//	})
//	if err != nil { ... }
//	err = a.Run(ctx) // until ctx is done
package agentsdk

import (
	"context"
	"errors"
	"time"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// Result is what a handler reports for one execution. The execution succeeded
// when ExitCode is 0 and Error is empty, and failed otherwise. Output and Error
// longer than protocol.MaxOutputBytes and protocol.MaxErrorBytes are cut and
// end with protocol.TruncationMarker; a cut output is reported with
// output_truncated, so the platform shows it was cut.
type Result struct {
	ExitCode int
	Output   string
	Error    string
	// OutputTruncated reports that the handler cut Output itself (ending it
	// with protocol.TruncationMarker): it is sent marked output_truncated.
	OutputTruncated bool
}

// Status is the protocol status of the result: "succeeded" or "failed".
func (r Result) Status() string {
	if r.ExitCode == 0 && r.Error == "" {
		return protocol.ResultSucceeded
	}
	return protocol.ResultFailed
}

// HandlerFunc runs one command. ctx is cancelled when the platform sends CANCEL
// for the execution (context.Cause(ctx) then wraps ErrCancelled and carries the
// reason) or when the Agent's Run context ends. Handlers must honour ctx.
type HandlerFunc func(ctx context.Context, cmd protocol.Command) Result

// Exit codes the SDK itself reports.
const (
	// ExitCodeUnknownVerb is reported for a verb without a handler.
	ExitCodeUnknownVerb = 127
	// ExitCodeHandlerPanic is reported when a handler panics.
	ExitCodeHandlerPanic = 70
	// ExitCodeCancelled is reported for an execution cancelled before its
	// handler started; handlers may use it for cancelled runs as well.
	ExitCodeCancelled = 130
	// ExitCodeRejected is reported for a COMMAND the agent refused to run
	// because it failed verification (signature, target, expiry, replay);
	// the result's error is "rejected: <reason>".
	ExitCodeRejected = 126
	// ExitCodeInterrupted is reported, with Config.StateDir, for an
	// execution that was running when the agent process ended (a crash, kill
	// -9, power loss): the next process reports it failed instead of
	// running it again, since it may have had effects already.
	ExitCodeInterrupted = 75
)

// Defaults applied by New.
const (
	DefaultVersion           = "0.0.0"
	DefaultMinBackoff        = 500 * time.Millisecond
	DefaultMaxBackoff        = 30 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxConcurrent     = 16
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultTelemetryInterval = 30 * time.Second
	DefaultMaxClockSkew      = 30 * time.Second
)

const (
	// stableSession is how long a session must last for the backoff to reset
	// even without a WELCOME.
	stableSession = 10 * time.Second
	// outQueueSize bounds the frames waiting for the writer of one connection.
	outQueueSize = 256
	// maxOutbox bounds the results kept while waiting for RESULT_ACK.
	maxOutbox = 4096
	// recentSize is how many acknowledged execution ids are remembered to
	// recognise a re-sent COMMAND.
	recentSize = 1024
	// nonceWindow is how many nonces of accepted COMMANDs are remembered to
	// refuse a replay under another execution id.
	nonceWindow = 4096
	// shutdownGrace bounds how long Run waits for cancelled handlers to return.
	shutdownGrace = 5 * time.Second
	// maxRetryAfter bounds how long a Retry-After header can hold an agent back.
	maxRetryAfter = 5 * time.Minute
)

// ErrCancelled is the cause (see context.Cause) of a handler context cancelled
// by a CANCEL frame; the error wrapping it carries the reason.
var ErrCancelled = errors.New("cancelled by the platform")

// ErrAlreadyRunning is returned by Run when the Agent is already running.
var ErrAlreadyRunning = errors.New("agentsdk: agent is already running")
