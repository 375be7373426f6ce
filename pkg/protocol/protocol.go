// Package protocol defines the agent wire protocol (docs/protocol.md): the JSON
// envelope, the frame types and their payloads, and strict decoding with validation.
package protocol

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/viworks/backend-agent/pkg/agentspec"
)

// Frame types.
const (
	TypeHello         = "HELLO"
	TypeWelcome       = "WELCOME"
	TypeHeartbeat     = "HEARTBEAT"
	TypeTelemetry     = "TELEMETRY"
	TypeCommand       = "COMMAND"
	TypeAck           = "ACK"
	TypeCommandResult = "COMMAND_RESULT"
	TypeResultAck     = "RESULT_ACK"
	TypeCancel        = "CANCEL"
	TypeError         = "ERROR"
)

// Limits on what an agent may send.
const (
	MaxIDLen           = agentspec.MaxIDLen
	MaxShortFieldLen   = agentspec.MaxShortFieldLen
	MaxCapabilities    = agentspec.MaxCapabilities
	MaxLabels          = agentspec.MaxLabels
	MaxMetrics         = 128
	MaxOutputBytes     = agentspec.MaxOutputBytes
	MaxErrorBytes      = 4 << 10
	DefaultReadLimit   = 1 << 20
	MaxRunningCommands = 1 << 20

	// TelemetryMaxAge and TelemetryMaxAhead bound a TELEMETRY sample's ts
	// around the gateway's clock: older or further ahead is refused.
	TelemetryMaxAge   = time.Hour
	TelemetryMaxAhead = 5 * time.Minute
)

// Protocol versions. An agent lists the versions it speaks in HELLO
// (protocol_versions; none means version 1); WELCOME names the one chosen.
const (
	ProtocolV1 = 1
	// CurrentVersion is the newest version this build speaks.
	CurrentVersion = ProtocolV1
)

// SupportedVersions are the protocol versions this build speaks, oldest first.
var SupportedVersions = []int{ProtocolV1}

// Negotiate picks the newest version both sides speak from an agent's list
// (empty: version 1); ok is false when there is none.
func Negotiate(offered []int) (version int, ok bool) {
	if len(offered) == 0 {
		return ProtocolV1, true
	}
	for _, v := range offered {
		if v > version && slices.Contains(SupportedVersions, v) {
			version = v
		}
	}
	return version, version != 0
}

// Envelope is the outer JSON object of every frame.
type Envelope struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Hello is the first frame an agent sends after the upgrade.
type Hello struct {
	ProtocolVersions []int             `json:"protocol_versions,omitempty"`
	AgentID          string            `json:"agent_id"`
	Site             string            `json:"site"`
	Version          string            `json:"version"`
	Capabilities     []string          `json:"capabilities"`
	Labels           map[string]string `json:"labels"`
	Hostname         string            `json:"hostname"`
	OS               string            `json:"os"`
	Arch             string            `json:"arch"`
}

// Welcome answers HELLO.
type Welcome struct {
	SessionID          string    `json:"session_id"`
	HeartbeatIntervalS int       `json:"heartbeat_interval_s"`
	TelemetryIntervalS int       `json:"telemetry_interval_s"`
	SigningKeyID       string    `json:"signing_key_id"`
	SigningPublicKey   string    `json:"signing_public_key"`
	ServerTime         time.Time `json:"server_time"`
	ProtocolVersion    int       `json:"protocol_version"`
	OutputLimit        int       `json:"output_limit"`    // bytes of COMMAND_RESULT output stored; beyond: truncated
	MaxFrameBytes      int64     `json:"max_frame_bytes"` // a larger frame closes the session (1009)
	// ReconnectBackoffMs is the agent's first reconnect delay, doubling for
	// MaxReconnectAttempts reconnects, then staying at the longest; the agent
	// never gives up (agent_management.reconnect_backoff_ms,
	// max_reconnect_attempts). 0 or absent (an older gateway): the agent's own.
	ReconnectBackoffMs   int `json:"reconnect_backoff_ms,omitempty"`
	MaxReconnectAttempts int `json:"max_reconnect_attempts,omitempty"`
}

// Health states an agent reports in HEARTBEAT.
const (
	HealthHealthy   = "healthy"
	HealthDegraded  = "degraded"
	HealthUnhealthy = "unhealthy"
)

// Heartbeat is sent periodically by the agent.
type Heartbeat struct {
	Status          string `json:"status"`
	UptimeS         int64  `json:"uptime_s"`
	RunningCommands int    `json:"running_commands"`
}

// Telemetry carries one sample of numeric metrics.
type Telemetry struct {
	TS      time.Time          `json:"ts"`
	Metrics map[string]float64 `json:"metrics"`
}

// Command asks an agent to run a verb.
type Command struct {
	CommandID   string          `json:"command_id"`
	ExecutionID string          `json:"execution_id"`
	AgentID     string          `json:"agent_id"`
	Verb        string          `json:"verb"`
	Args        json.RawMessage `json:"args"`
	RequestedBy string          `json:"requested_by"`
	IssuedAt    time.Time       `json:"issued_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	Nonce       string          `json:"nonce"`
	KeyID       string          `json:"key_id"`
	Signature   string          `json:"signature"`
}

// Ack states of an execution reported by the agent.
const (
	AckReceived = "received"
	AckStarted  = "started"
)

// Ack acknowledges a COMMAND.
type Ack struct {
	ExecutionID string `json:"execution_id"`
	State       string `json:"state"`
}

// Result statuses an agent may report.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
)

// CommandResult is the outcome of one execution.
type CommandResult struct {
	ExecutionID string `json:"execution_id"`
	CommandID   string `json:"command_id"`
	Status      string `json:"status"`
	ExitCode    int    `json:"exit_code"`
	Output      string `json:"output"`
	// OutputTruncated says the output was cut to the output limit (by the
	// agent, or by the gateway on receipt).
	OutputTruncated bool      `json:"output_truncated,omitempty"`
	Error           string    `json:"error"`
	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at"`
}

// Outcomes of a COMMAND_RESULT, told in RESULT_ACK. Each ends the agent's
// duty to re-send the result.
const (
	OutcomeStored           = "stored"            // recorded now
	OutcomeDuplicate        = "duplicate"         // the execution already had its result
	OutcomeUnknownExecution = "unknown_execution" // no such execution
	OutcomeNotYours         = "not_yours"         // the execution belongs to another agent
)

// ResultAck tells the agent what became of its result; after a stored or
// duplicate outcome the result is durable.
type ResultAck struct {
	ExecutionID string `json:"execution_id"`
	Outcome     string `json:"outcome"`
}

// Cancel asks the agent to stop an execution.
type Cancel struct {
	ExecutionID string `json:"execution_id"`
	Reason      string `json:"reason"`
}

// Error codes sent in ERROR frames.
const (
	ErrCodeUnknownType    = "unknown_type"
	ErrCodeInvalidPayload = "invalid_payload"
	ErrCodeIdentity       = "identity_mismatch"
	ErrCodeUnsupported    = "unsupported_version"
	ErrCodeOutOfWindow    = "ts_out_of_window"
)

// ErrorPayload is sent to the agent when a frame, or a field of it, cannot be
// processed.
type ErrorPayload struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Field     string `json:"field,omitempty"`      // the field refused, e.g. payload.metrics.cpu_percent
	FrameType string `json:"frame_type,omitempty"` // the type of the frame it was in
}
