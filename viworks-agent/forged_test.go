package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

// fakeGateway plays the gateway's side of the protocol, so a test can send
// the agent COMMANDs the real platform never would.
type fakeGateway struct {
	srv    *httptest.Server
	signer *signing.Signer
	conns  chan *websocket.Conn
}

const fakeCredential = "fake-credential-0123456789"

func newSigner(t *testing.T) *signing.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	s, err := signing.NewSigner(priv)
	require.NoError(t, err)
	return s
}

func newFakeGateway(t *testing.T, secret string) *fakeGateway {
	t.Helper()
	g := &fakeGateway{signer: newSigner(t), conns: make(chan *websocket.Conn, 4)}
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+agentsdk.EnrollPath, func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Secret  string `json:"enrollment_secret"`
			AgentID string `json:"agent_id"`
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil || req.Secret != secret {
			http.Error(w, "bad enrollment", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"agent_id": req.AgentID, "credential": fakeCredential})
	})
	mux.HandleFunc("GET /ws/agent", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+fakeCredential {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err == nil {
			g.conns <- ws
		}
	})
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) url() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + "/ws/agent" }

// session accepts the agent's connection and answers its HELLO.
func (g *fakeGateway) session(t *testing.T) *fakeSession {
	t.Helper()
	var ws *websocket.Conn
	select {
	case ws = <-g.conns:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not connect")
	}
	t.Cleanup(func() { _ = ws.Close() })
	s := &fakeSession{t: t, ws: ws, g: g}
	hello := s.next().Payload.(*protocol.Hello)
	s.hello = hello
	s.send(protocol.TypeWelcome, protocol.Welcome{SessionID: "fake-session", HeartbeatIntervalS: 30, TelemetryIntervalS: 30,
		SigningKeyID: g.signer.KeyID(), SigningPublicKey: signing.EncodePublicKey(g.signer.PublicKey()),
		ServerTime: time.Now().UTC(), ProtocolVersion: protocol.SupportedVersions[0], OutputLimit: protocol.MaxOutputBytes,
		MaxFrameBytes: protocol.DefaultReadLimit})
	return s
}

type fakeSession struct {
	t     *testing.T
	ws    *websocket.Conn
	g     *fakeGateway
	hello *protocol.Hello
}

func (s *fakeSession) send(typ string, payload any) {
	s.t.Helper()
	b, err := protocol.Encode(typ, "", payload)
	require.NoError(s.t, err)
	require.NoError(s.t, s.ws.WriteMessage(websocket.TextMessage, b))
}

// next returns the agent's next frame other than HEARTBEAT and TELEMETRY.
func (s *fakeSession) next() protocol.Frame {
	s.t.Helper()
	for {
		require.NoError(s.t, s.ws.SetReadDeadline(time.Now().Add(30*time.Second)))
		_, data, err := s.ws.ReadMessage()
		require.NoError(s.t, err)
		f, err := protocol.Decode(data)
		require.NoError(s.t, err, "invalid frame %s", data)
		if f.Type != protocol.TypeHeartbeat && f.Type != protocol.TypeTelemetry {
			return f
		}
	}
}

// result waits for execID's COMMAND_RESULT, noting whether it was ACKed
// first, and acknowledges it.
func (s *fakeSession) result(execID string) (*protocol.CommandResult, bool) {
	s.t.Helper()
	acked := false
	for {
		switch p := s.next().Payload.(type) {
		case *protocol.Ack:
			if p.ExecutionID == execID {
				acked = true
			}
		case *protocol.CommandResult:
			if p.ExecutionID == execID {
				s.send(protocol.TypeResultAck, protocol.ResultAck{ExecutionID: execID, Outcome: protocol.OutcomeStored})
				return p, acked
			}
		}
	}
}

func (s *fakeSession) command(execID, verb string, args any, issued time.Time) protocol.Command {
	s.t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(s.t, err)
	return protocol.Command{CommandID: "cmd-" + execID, ExecutionID: execID, AgentID: s.hello.AgentID, Verb: verb, Args: raw,
		RequestedBy: "tester", IssuedAt: issued.UTC(), ExpiresAt: issued.Add(5 * time.Minute).UTC(), Nonce: "nonce-" + execID}
}

func sign(t *testing.T, s *signing.Signer, cmd protocol.Command) protocol.Command {
	t.Helper()
	require.NoError(t, s.Sign(&cmd))
	return cmd
}

// TestAgentRefusesForgedCommands sends the real agent binary COMMANDs that
// must never run: signed by another key, args altered after signing, a
// replayed nonce, expired, and verbs it did not enable or does not know.
// Each is answered with a failed result and no ACK; the script counting its
// runs ran only for the genuine COMMAND.
func TestAgentRefusesForgedCommands(t *testing.T) {
	g := newFakeGateway(t, "fake-secret")
	h := newAgentHost(t, "host-forged", g.url(), "fake-secret", signing.EncodePublicKey(g.signer.PublicKey()), "")
	h.start(t)
	s := g.session(t)
	require.Equal(t, []string{"run_script", "system_info"}, s.hello.Capabilities, "only the enabled verbs are announced")

	runs := filepath.Join(h.work, "runs")
	onceArgs := map[string]any{"script": "once", "args": []string{"0"}, "env": map[string]string{"work": h.work}}
	genuine := sign(t, g.signer, s.command("genuine", "run_script", onceArgs, time.Now()))
	s.send(protocol.TypeCommand, genuine)
	r, acked := s.result("genuine")
	require.True(t, acked)
	require.Equal(t, protocol.ResultSucceeded, r.Status, r.Error)
	require.Equal(t, "finished genuine\n", r.Output)

	other := newSigner(t)
	altered := sign(t, g.signer, s.command("altered", "run_script", onceArgs, time.Now()))
	altered.Args = json.RawMessage(`{"script":"once","args":["0","extra"],"env":{"work":` + fmt.Sprintf("%q", h.work) + `}}`)
	replayed := sign(t, g.signer, s.command("replayed", "run_script", onceArgs, time.Now()))
	replayed.Nonce = genuine.Nonce
	replayed = sign(t, g.signer, replayed)
	for _, tc := range []struct {
		name   string
		cmd    protocol.Command
		exit   int
		errMsg string
	}{
		{"other key", sign(t, other, s.command("other-key", "run_script", onceArgs, time.Now())), agentsdk.ExitCodeRejected, "rejected: unknown signing key"},
		{"altered args", altered, agentsdk.ExitCodeRejected, "rejected: bad signature"},
		{"replayed nonce", replayed, agentsdk.ExitCodeRejected, "rejected: nonce replay"},
		{"expired", sign(t, g.signer, s.command("expired", "run_script", onceArgs, time.Now().Add(-time.Hour))), agentsdk.ExitCodeRejected, "rejected: expired"},
		{"disabled verb", sign(t, g.signer, s.command("disabled", "service", map[string]any{"action": "stop", "unit": "sshd.service"}, time.Now())),
			agentsdk.ExitCodeUnknownVerb, "verb service is disabled on this agent (not in its configuration's verbs); nothing ran"},
		{"unknown verb", sign(t, g.signer, s.command("unknown", "shell", map[string]any{"cmd": "id"}, time.Now())), agentsdk.ExitCodeUnknownVerb, "unknown verb: shell"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.send(protocol.TypeCommand, tc.cmd)
			r, acked := s.result(tc.cmd.ExecutionID)
			require.Equal(t, protocol.ResultFailed, r.Status)
			require.Equal(t, tc.exit, r.ExitCode)
			require.Equal(t, tc.errMsg, r.Error)
			if tc.exit == agentsdk.ExitCodeRejected {
				require.False(t, acked, "a refused COMMAND is not acknowledged")
			}
		})
	}
	// The genuine frame sent again is a duplicate: answered, not run.
	s.send(protocol.TypeCommand, genuine)
	probe := sign(t, g.signer, s.command("probe", "system_info", map[string]any{}, time.Now()))
	s.send(protocol.TypeCommand, probe)
	r, _ = s.result("probe")
	require.Equal(t, protocol.ResultSucceeded, r.Status, r.Error)

	b, err := os.ReadFile(runs)
	require.NoError(t, err)
	require.Equal(t, "run\n", string(b), "only the genuine COMMAND ran")
}
