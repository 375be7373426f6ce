package agentsdk

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

const (
	testToken   = "agent-token-123"
	testAgentID = "agent-1"
	waitFor     = 5 * time.Second
)

// gateway is a minimal fake of the agent gateway: it checks the bearer
// credential, upgrades, and hands each connection to the test. Each
// connection signs COMMANDs with, and announces in WELCOME, the key that was
// current when it was accepted.
type gateway struct {
	srv      *httptest.Server
	conns    chan *gwConn
	attempts atomic.Int32
	refuse   atomic.Int32 // HTTP status to answer instead of upgrading; 0 upgrades
	signer   atomic.Pointer[signing.Signer]
}

type gwConn struct {
	ws     *websocket.Conn
	header http.Header
	signer *signing.Signer
}

func newSigner(t testing.TB) *signing.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	s, err := signing.NewSigner(priv)
	require.NoError(t, err)
	return s
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{conns: make(chan *gwConn, 16)}
	g.signer.Store(newSigner(t))
	up := websocket.Upgrader{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.attempts.Add(1)
		if st := g.refuse.Load(); st != 0 {
			http.Error(w, http.StatusText(int(st)), int(st))
			return
		}
		if r.URL.Path != "/ws/agent" || r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &gwConn{ws: ws, header: r.Header.Clone(), signer: g.signer.Load()}
		t.Cleanup(func() { _ = ws.Close() })
		g.conns <- c
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) url() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + "/ws/agent" }

func (g *gateway) accept(t *testing.T) *gwConn {
	t.Helper()
	select {
	case c := <-g.conns:
		return c
	case <-time.After(waitFor):
		t.Fatal("agent did not connect")
		return nil
	}
}

// read returns the next frame, decoded and validated as the real gateway does.
func (c *gwConn) read(t *testing.T) protocol.Frame {
	t.Helper()
	require.NoError(t, c.ws.SetReadDeadline(time.Now().Add(waitFor)))
	_, data, err := c.ws.ReadMessage()
	require.NoError(t, err)
	f, err := protocol.Decode(data)
	require.NoError(t, err, "agent sent an invalid frame: %s", data)
	return f
}

// expect returns the next frame that is not a HEARTBEAT or TELEMETRY and
// checks its type.
func (c *gwConn) expect(t *testing.T, typ string) protocol.Frame {
	t.Helper()
	f := c.next(t)
	require.Equal(t, typ, f.Type)
	return f
}

// next returns the next frame that is not a HEARTBEAT or TELEMETRY.
func (c *gwConn) next(t *testing.T) protocol.Frame {
	t.Helper()
	for {
		f := c.read(t)
		if f.Type != protocol.TypeHeartbeat && f.Type != protocol.TypeTelemetry {
			return f
		}
	}
}

func (c *gwConn) expectAck(t *testing.T, execID, state string) {
	t.Helper()
	ack := c.expect(t, protocol.TypeAck).Payload.(*protocol.Ack)
	require.Equal(t, protocol.Ack{ExecutionID: execID, State: state}, *ack)
}

func (c *gwConn) expectResult(t *testing.T, execID string) *protocol.CommandResult {
	t.Helper()
	r := c.expect(t, protocol.TypeCommandResult).Payload.(*protocol.CommandResult)
	require.Equal(t, execID, r.ExecutionID)
	return r
}

func (c *gwConn) send(t *testing.T, typ string, payload any) {
	t.Helper()
	f, err := protocol.Encode(typ, "", payload)
	require.NoError(t, err)
	require.NoError(t, c.ws.WriteMessage(websocket.TextMessage, f))
}

// welcome reads HELLO and answers WELCOME announcing the connection's key.
func (c *gwConn) welcome(t *testing.T, sessionID string) *protocol.Hello {
	t.Helper()
	return c.welcomeWith(t, protocol.Welcome{
		SessionID: sessionID, SigningKeyID: c.signer.KeyID(), SigningPublicKey: signing.EncodePublicKey(c.signer.PublicKey()),
	})
}

// welcomeWith reads HELLO and answers w (with intervals and server time set).
func (c *gwConn) welcomeWith(t *testing.T, w protocol.Welcome) *protocol.Hello {
	t.Helper()
	h := c.expect(t, protocol.TypeHello).Payload.(*protocol.Hello)
	w.HeartbeatIntervalS, w.TelemetryIntervalS, w.ServerTime = 30, 30, time.Now().UTC()
	c.send(t, protocol.TypeWelcome, w)
	return h
}

var nonceSeq atomic.Int64

// newCommand builds an unsigned COMMAND for the test agent, valid for an hour.
func newCommand(t *testing.T, execID, verb string, args any) protocol.Command {
	t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	now := time.Now().UTC()
	return protocol.Command{
		CommandID: "cmd-" + execID, ExecutionID: execID, AgentID: testAgentID, Verb: verb, Args: raw,
		RequestedBy: "tester", IssuedAt: now, ExpiresAt: now.Add(time.Hour), Nonce: fmt.Sprintf("nonce-%d", nonceSeq.Add(1)),
	}
}

func signed(t *testing.T, s *signing.Signer, cmd protocol.Command) protocol.Command {
	t.Helper()
	require.NoError(t, s.Sign(&cmd))
	return cmd
}

// command sends a COMMAND signed with the connection's key.
func (c *gwConn) command(t *testing.T, execID, verb string, args any) {
	t.Helper()
	c.send(t, protocol.TypeCommand, signed(t, c.signer, newCommand(t, execID, verb, args)))
}

func (c *gwConn) sendCommand(t *testing.T, cmd protocol.Command) {
	t.Helper()
	c.send(t, protocol.TypeCommand, cmd)
}

// expectRejected checks that the next frame (no ACK before it) is the failed
// result of a refused COMMAND.
func (c *gwConn) expectRejected(t *testing.T, execID, reason string) {
	t.Helper()
	f := c.next(t)
	require.Equal(t, protocol.TypeCommandResult, f.Type, "a refused COMMAND is not acknowledged: %+v", f.Payload)
	r := f.Payload.(*protocol.CommandResult)
	require.Equal(t, execID, r.ExecutionID)
	require.Equal(t, protocol.ResultFailed, r.Status)
	require.Equal(t, ExitCodeRejected, r.ExitCode)
	require.Equal(t, "rejected: "+reason, r.Error)
	require.Empty(t, r.Output)
}

func echoHandler(_ context.Context, cmd protocol.Command) Result {
	var args struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(cmd.Args, &args); err != nil {
		return Result{ExitCode: 2, Error: err.Error()}
	}
	return Result{Output: args.Message}
}

func baseConfig(g *gateway) Config {
	return Config{
		URL:        g.url(),
		AgentID:    testAgentID,
		Credential: testToken,
		Site:       "lab",
		Version:    "1.2.3",
		Labels:     map[string]string{"role": "gateway"},
		Handlers:   map[string]HandlerFunc{"echo": echoHandler},
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond,
		// Every test verifies signatures: the agent pins the gateway's key.
		TrustedKeys: g.signer.Load().PublicKeys(),
	}
}

// start runs the agent until the test ends and checks Run returns nil.
func start(t *testing.T, cfg Config) (*Agent, context.CancelFunc) {
	t.Helper()
	a, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(waitFor):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return a, cancel
}

func TestHelloAndAuthHeader(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	cfg.Handlers["sleep"] = echoHandler
	cfg.Hostname = "host-1"
	a, _ := start(t, cfg)

	c := g.accept(t)
	require.Equal(t, "Bearer "+testToken, c.header.Get("Authorization"))
	h := c.welcome(t, "sess-1")
	require.Equal(t, protocol.Hello{
		AgentID: testAgentID, Site: "lab", Version: "1.2.3",
		ProtocolVersions: protocol.SupportedVersions,
		Capabilities:     []string{"echo", "sleep"}, Labels: map[string]string{"role": "gateway"},
		Hostname: "host-1", OS: cfg.withDefaults().OS, Arch: cfg.withDefaults().Arch,
	}, *h)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, a.WaitConnected(ctx))
	require.True(t, a.Connected())
	require.Equal(t, "sess-1", a.SessionID())
}

func TestEchoCommand(t *testing.T) {
	g := newGateway(t)
	a, _ := start(t, baseConfig(g))
	c := g.accept(t)
	c.welcome(t, "s")

	before := time.Now().UTC()
	c.command(t, "e1", "echo", map[string]string{"message": "hello world"})
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	r := c.expectResult(t, "e1")
	require.Equal(t, "cmd-e1", r.CommandID)
	require.Equal(t, protocol.ResultSucceeded, r.Status)
	require.Equal(t, 0, r.ExitCode)
	require.Equal(t, "hello world", r.Output)
	require.Empty(t, r.Error)
	require.False(t, r.StartedAt.Before(before.Add(-time.Second)))
	require.False(t, r.FinishedAt.Before(r.StartedAt))
	require.Equal(t, 1, a.PendingResults())

	c.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: "e1"})
	require.Eventually(t, func() bool { return a.PendingResults() == 0 }, waitFor, 5*time.Millisecond)
}

// An output beyond the protocol's limit used to be cut silently; it is sent
// cut with the marker and output_truncated, so the platform shows it.
func TestLargeOutputMarkedTruncated(t *testing.T) {
	g := newGateway(t)
	a, _ := start(t, baseConfig(g))
	c := g.accept(t)
	c.welcome(t, "s")
	c.command(t, "e1", "echo", map[string]string{"message": strings.Repeat("x", 200<<10)})
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	for {
		require.NoError(t, c.ws.SetReadDeadline(time.Now().Add(waitFor)))
		_, data, err := c.ws.ReadMessage()
		require.NoError(t, err)
		var env struct {
			Type    string
			Payload struct {
				Output          string `json:"output"`
				OutputTruncated bool   `json:"output_truncated"`
			}
		}
		require.NoError(t, json.Unmarshal(data, &env))
		if env.Type != protocol.TypeCommandResult {
			continue
		}
		require.True(t, env.Payload.OutputTruncated, "the agent marks what it cut")
		require.LessOrEqual(t, len(env.Payload.Output), protocol.MaxOutputBytes, "as sent, before any gateway cuts it")
		require.True(t, strings.HasSuffix(env.Payload.Output, protocol.TruncationMarker))
		break
	}
	require.Equal(t, 1, a.PendingResults())
}

func TestUnknownVerb(t *testing.T) {
	g := newGateway(t)
	start(t, baseConfig(g))
	c := g.accept(t)
	c.welcome(t, "s")

	c.command(t, "e1", "reboot", nil)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	r := c.expectResult(t, "e1")
	require.Equal(t, protocol.ResultFailed, r.Status)
	require.Equal(t, ExitCodeUnknownVerb, r.ExitCode)
	require.Equal(t, "unknown verb: reboot", r.Error)
}

func TestHandlerPanic(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	cfg.Handlers["boom"] = func(context.Context, protocol.Command) Result { panic("secret-password") }
	logger, hook := logtest.NewNullLogger()
	cfg.Logger = logger
	start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")

	c.command(t, "e1", "boom", nil)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	r := c.expectResult(t, "e1")
	require.Equal(t, protocol.ResultFailed, r.Status)
	require.Equal(t, "handler panicked", r.Error)
	require.NotZero(t, r.ExitCode)
	for _, e := range hook.AllEntries() {
		s, _ := e.String()
		require.NotContains(t, s, "secret-password")
	}
}

func TestResultResentAfterReconnect(t *testing.T) {
	g := newGateway(t)
	var runs atomic.Int32
	cfg := baseConfig(g)
	cfg.Handlers["echo"] = func(ctx context.Context, cmd protocol.Command) Result {
		runs.Add(1)
		return echoHandler(ctx, cmd)
	}
	a, _ := start(t, cfg)

	c1 := g.accept(t)
	c1.welcome(t, "s1")
	c1.command(t, "e1", "echo", map[string]string{"message": "kept"})
	c1.expectAck(t, "e1", protocol.AckReceived)
	c1.expectAck(t, "e1", protocol.AckStarted)
	first := c1.expectResult(t, "e1")
	// Drop the connection before the result is durable: no RESULT_ACK.
	require.NoError(t, c1.ws.Close())

	c2 := g.accept(t)
	c2.welcome(t, "s2")
	again := c2.expectResult(t, "e1")
	require.Equal(t, *first, *again)
	require.Equal(t, "s2", a.SessionID())
	c2.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: "e1"})
	require.Eventually(t, func() bool { return a.PendingResults() == 0 }, waitFor, 5*time.Millisecond)
	require.NoError(t, c2.ws.Close())

	// Acknowledged: not sent after the next reconnect. The first frame after
	// WELCOME is the probe's ACK.
	c3 := g.accept(t)
	c3.welcome(t, "s3")
	c3.command(t, "probe", "nope", nil)
	c3.expectAck(t, "probe", protocol.AckReceived)
	require.Equal(t, int32(1), runs.Load())
}

// TestResultResentWhileUnacknowledged: the gateway received the result but
// never confirmed it (its database write failed): the agent sends it again on
// the same session after a heartbeat interval, and stops once it is confirmed.
func TestResultResentWhileUnacknowledged(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	cfg.HeartbeatInterval = 50 * time.Millisecond
	a, _ := start(t, cfg)

	c := g.accept(t)
	c.welcome(t, "s1")
	c.command(t, "e1", "echo", map[string]string{"message": "again"})
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	first := c.expectResult(t, "e1")
	// No RESULT_ACK: the result comes again on the same connection, among
	// the heartbeats, within a few intervals.
	var again *protocol.CommandResult
	for deadline := time.Now().Add(2 * time.Second); again == nil && time.Now().Before(deadline); {
		if r, ok := c.read(t).Payload.(*protocol.CommandResult); ok {
			again = r
		}
	}
	require.NotNil(t, again, "the unacknowledged result was not sent again")
	require.Equal(t, *first, *again)
	require.Equal(t, "s1", a.SessionID())

	c.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: "e1"})
	require.Eventually(t, func() bool { return a.PendingResults() == 0 }, waitFor, 5*time.Millisecond)
	// Confirmed: only heartbeats follow (a copy already in flight may arrive).
	deadline := time.Now().Add(300 * time.Millisecond)
	extra := 0
	for time.Now().Before(deadline) {
		if f := c.read(t); f.Type == protocol.TypeCommandResult {
			extra++
		}
	}
	require.LessOrEqual(t, extra, 1, "results stop once acknowledged")
}

func TestDuplicateCommandRunsOnce(t *testing.T) {
	g := newGateway(t)
	var runs atomic.Int32
	release := make(chan struct{})
	cfg := baseConfig(g)
	cfg.Handlers["block"] = func(ctx context.Context, _ protocol.Command) Result {
		runs.Add(1)
		<-release
		return Result{Output: "done"}
	}
	a, _ := start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")

	c.command(t, "e1", "block", nil)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)

	// While running: acknowledged again, not started twice.
	c.command(t, "e1", "block", nil)
	c.expectAck(t, "e1", protocol.AckStarted)
	require.Equal(t, 1, a.RunningCommands())

	close(release)
	r := c.expectResult(t, "e1")
	require.Equal(t, "done", r.Output)

	// Finished but not acknowledged: the stored result is sent again.
	c.command(t, "e1", "block", nil)
	require.Equal(t, *r, *c.expectResult(t, "e1"))

	// Acknowledged: ACK again, no run, no result.
	c.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: "e1"})
	c.command(t, "e1", "block", nil)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.command(t, "probe", "nope", nil)
	c.expectAck(t, "probe", protocol.AckReceived)

	require.Equal(t, int32(1), runs.Load())
}

func TestCancelCancelsHandlerContext(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	causes := make(chan error, 1)
	cfg.Handlers["wait"] = func(ctx context.Context, _ protocol.Command) Result {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return Result{ExitCode: ExitCodeCancelled, Error: context.Cause(ctx).Error()}
	}
	start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")

	c.command(t, "e1", "wait", nil)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	c.send(t, protocol.TypeCancel, protocol.Cancel{ExecutionID: "other", Reason: "not this one"})
	c.send(t, protocol.TypeCancel, protocol.Cancel{ExecutionID: "e1", Reason: "operator request"})

	r := c.expectResult(t, "e1")
	require.Equal(t, protocol.ResultFailed, r.Status)
	require.Contains(t, r.Error, "operator request")
	require.ErrorIs(t, <-causes, ErrCancelled)
}

func TestRunCancelEndsHandlersAndClosesSession(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	stopped := make(chan struct{})
	cfg.Handlers["wait"] = func(ctx context.Context, _ protocol.Command) Result {
		<-ctx.Done()
		close(stopped)
		return Result{ExitCode: ExitCodeCancelled, Error: "stopped"}
	}
	a, cancel := start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")
	c.command(t, "e1", "wait", nil)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)

	cancel()
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("handler context was not cancelled")
	}
	require.NoError(t, c.ws.SetReadDeadline(time.Now().Add(waitFor)))
	var err error
	for err == nil {
		_, _, err = c.ws.ReadMessage()
	}
	require.True(t, websocket.IsCloseError(err, websocket.CloseGoingAway), "got %v", err)
	require.Eventually(t, func() bool { return !a.Connected() }, waitFor, 5*time.Millisecond)
}

func TestMaxConcurrent(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	cfg.MaxConcurrent = 1
	release := make(chan struct{})
	cfg.Handlers["block"] = func(context.Context, protocol.Command) Result {
		<-release
		return Result{}
	}
	start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")

	c.command(t, "e1", "block", nil)
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	c.command(t, "e2", "block", nil)
	c.expectAck(t, "e2", protocol.AckReceived)
	// e2 waits for the only slot: a duplicate reports it as not started.
	c.command(t, "e2", "block", nil)
	c.expectAck(t, "e2", protocol.AckReceived)

	release <- struct{}{}
	// e1's result and e2's start race for the queue: accept either order.
	got := map[string]bool{}
	for range 2 {
		switch p := c.next(t).Payload.(type) {
		case *protocol.CommandResult:
			got["result "+p.ExecutionID] = true
		case *protocol.Ack:
			got[p.State+" "+p.ExecutionID] = true
		}
	}
	require.Equal(t, map[string]bool{"result e1": true, "started e2": true}, got)
	release <- struct{}{}
	c.expectResult(t, "e2")
}

func TestHeartbeatAndTelemetry(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	cfg.HeartbeatInterval = 10 * time.Millisecond
	cfg.TelemetryInterval = 10 * time.Millisecond
	cfg.Telemetry = func() map[string]float64 {
		return map[string]float64{"cpu_percent": 12.5, "bad": nanValue(), "": 1}
	}
	start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")

	var hb *protocol.Heartbeat
	var tel *protocol.Telemetry
	for hb == nil || tel == nil {
		switch p := c.read(t).Payload.(type) {
		case *protocol.Heartbeat:
			hb = p
		case *protocol.Telemetry:
			tel = p
		}
	}
	require.Equal(t, protocol.HealthHealthy, hb.Status)
	require.Equal(t, 0, hb.RunningCommands)
	require.GreaterOrEqual(t, hb.UptimeS, int64(0))
	require.Equal(t, map[string]float64{"cpu_percent": 12.5}, tel.Metrics)
}

func nanValue() float64 {
	var zero float64
	return zero / zero
}

func TestServerFramesIgnoredOrLogged(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	logger, hook := logtest.NewNullLogger()
	cfg.Logger = logger
	a, _ := start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")

	require.NoError(t, c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"SURPRISE","payload":{}}`)))
	require.NoError(t, c.ws.WriteMessage(websocket.TextMessage, []byte(`{not json`)))
	c.send(t, protocol.TypeError, protocol.ErrorPayload{Code: "unknown_type", Message: "what"})
	// The session survives all of them.
	c.command(t, "e1", "echo", map[string]string{"message": "still here"})
	c.expectAck(t, "e1", protocol.AckReceived)
	c.expectAck(t, "e1", protocol.AckStarted)
	require.Equal(t, "still here", c.expectResult(t, "e1").Output)
	require.True(t, a.Connected())

	msgs := map[string]bool{}
	for _, e := range hook.AllEntries() {
		msgs[e.Message] = true
		if e.Message == "gateway refused a frame" {
			require.Equal(t, "unknown_type", e.Data["code"])
			require.Equal(t, testAgentID, e.Data["agent_id"])
		}
	}
	require.True(t, msgs["ignoring frame of unknown type"])
	require.True(t, msgs["ignoring malformed frame"])
	require.True(t, msgs["gateway refused a frame"])
}

func TestUnauthorizedBacksOff(t *testing.T) {
	g := newGateway(t)
	g.refuse.Store(http.StatusUnauthorized)
	cfg := baseConfig(g)
	cfg.MinBackoff = 20 * time.Millisecond
	cfg.MaxBackoff = 80 * time.Millisecond
	logger, hook := logtest.NewNullLogger()
	cfg.Logger = logger
	a, cancel := start(t, cfg)

	time.Sleep(600 * time.Millisecond)
	cancel()
	n := g.attempts.Load()
	// Without backoff this would be thousands; with it about a dozen
	// (mean delay ~40ms once the ceiling is reached).
	require.GreaterOrEqual(t, n, int32(3))
	require.LessOrEqual(t, n, int32(60))
	require.False(t, a.Connected())

	var warned bool
	for _, e := range hook.AllEntries() {
		if e.Message == "gateway rejected the agent credential" {
			warned = true
			require.Equal(t, logrus.WarnLevel, e.Level)
		}
	}
	require.True(t, warned)
}

func TestWrongCredentialGets401(t *testing.T) {
	g := newGateway(t)
	cfg := baseConfig(g)
	cfg.Credential = "wrong"
	a, cancel := start(t, cfg)
	require.Eventually(t, func() bool { return g.attempts.Load() >= 2 }, waitFor, 5*time.Millisecond)
	cancel()
	require.False(t, a.Connected())
	require.Empty(t, g.conns)
}

func TestBackoffBounds(t *testing.T) {
	minD, maxD := 100*time.Millisecond, time.Second
	for attempt, ceil := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceil *= time.Millisecond
		var top time.Duration
		for range 200 {
			d := backoff(minD, maxD, nil, attempt)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.LessOrEqual(t, d, ceil)
			top = max(top, d)
		}
		require.Greater(t, top, ceil/2, "jitter should spread over the whole range")
	}
	require.LessOrEqual(t, backoff(minD, maxD, nil, 1000), maxD)
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, 3*time.Second, parseRetryAfter("3", now))
	require.Equal(t, time.Duration(0), parseRetryAfter("", now))
	require.Equal(t, time.Duration(0), parseRetryAfter("soon", now))
	require.Equal(t, time.Duration(0), parseRetryAfter("-4", now))
	require.Equal(t, maxRetryAfter, parseRetryAfter("99999", now))
	require.Equal(t, 10*time.Second, parseRetryAfter(now.Add(10*time.Second).Format(http.TimeFormat), now))
}

func TestTruncate(t *testing.T) {
	s := strings.Repeat("é", protocol.MaxOutputBytes) // 2 bytes each
	out, cut := protocol.Truncate(s, protocol.MaxOutputBytes)
	require.True(t, cut)
	require.LessOrEqual(t, len(out), protocol.MaxOutputBytes)
	require.True(t, utf8.ValidString(out))
	require.True(t, strings.HasSuffix(out, protocol.TruncationMarker))
	out, cut = protocol.Truncate("a\xffb", 10)
	require.Equal(t, "a\uFFFDb", out)
	require.False(t, cut)
}

func TestResultStatus(t *testing.T) {
	require.Equal(t, protocol.ResultSucceeded, Result{}.Status())
	require.Equal(t, protocol.ResultFailed, Result{ExitCode: 1}.Status())
	require.Equal(t, protocol.ResultFailed, Result{Error: "x"}.Status())
}

func TestConfigValidate(t *testing.T) {
	ok := Config{URL: "ws://gw:8080/ws/agent", AgentID: "a-1", Credential: "tok", TrustOnFirstUse: true}
	require.NoError(t, ok.Validate())
	key := newSigner(t).PublicKey()

	cases := map[string]struct {
		mut  func(*Config)
		want string
	}{
		"no url":       {func(c *Config) { c.URL = "" }, "URL is required"},
		"http url":     {func(c *Config) { c.URL = "http://gw/ws/agent" }, "scheme must be ws or wss"},
		"no host":      {func(c *Config) { c.URL = "ws:///ws/agent" }, "no host"},
		"no agent id":  {func(c *Config) { c.AgentID = "" }, "AgentID is required"},
		"spaced id":    {func(c *Config) { c.AgentID = "a b" }, "AgentID may contain only"},
		"long id":      {func(c *Config) { c.AgentID = strings.Repeat("a", 129) }, "AgentID is longer"},
		"no cred":      {func(c *Config) { c.Credential = "" }, "Credential, EnrollmentSecret, CredentialFile or StateDir is required"},
		"cred newline": {func(c *Config) { c.Credential = "a\nb" }, "Credential contains"},
		"long site":    {func(c *Config) { c.Site = strings.Repeat("s", 257) }, "Site is longer"},
		"empty label":  {func(c *Config) { c.Labels = map[string]string{"": "v"} }, "label"},
		"nil handler":  {func(c *Config) { c.Handlers = map[string]HandlerFunc{"x": nil} }, `handler for verb "x" is nil`},
		"neg backoff":  {func(c *Config) { c.MinBackoff = -1 }, "MinBackoff must not be negative"},
		"min > max":    {func(c *Config) { c.MinBackoff = time.Minute; c.MaxBackoff = time.Second }, "greater than MaxBackoff"},
		"neg conc":     {func(c *Config) { c.MaxConcurrent = -1 }, "MaxConcurrent must not be negative"},
		"no trust": {func(c *Config) { c.TrustOnFirstUse = false },
			"no COMMAND signing key is trusted: set TrustedKeys (the platform's public keys), TrustOnFirstUse (pin the key of the first WELCOME) or, for tests only, InsecureSkipVerify"},
		"wrong key id": {func(c *Config) { c.TrustedKeys = map[string]ed25519.PublicKey{"ed25519:0000000000000000": key} },
			`TrustedKeys["ed25519:0000000000000000"]: the key id of that key is "` + signing.KeyID(key) + `"`},
		"short key": {func(c *Config) { c.TrustedKeys = map[string]ed25519.PublicKey{"k": key[:16]} },
			`TrustedKeys["k"] is 16 bytes, not an Ed25519 public key`},
		"neg skew": {func(c *Config) { c.MaxClockSkew = -time.Second }, "MaxClockSkew must not be negative"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := ok
			tc.mut(&c)
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			_, err = New(c)
			require.Error(t, err)
		})
	}
}

func TestRunTwiceIsRefused(t *testing.T) {
	g := newGateway(t)
	a, _ := start(t, baseConfig(g))
	g.accept(t).welcome(t, "s")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, a.WaitConnected(ctx))
	require.True(t, errors.Is(a.Run(ctx), ErrAlreadyRunning))
}

// FuzzHandleFrame feeds arbitrary server frames to the agent: nothing panics
// and every frame the agent queues is one the gateway accepts.
func FuzzHandleFrame(f *testing.F) {
	signer, err := signing.NewSigner(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	require.NoError(f, err)
	good := protocol.Command{
		CommandID: "c1", ExecutionID: "e1", AgentID: testAgentID, Verb: "echo", Args: json.RawMessage(`{"message":"x"}`),
		IssuedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), Nonce: "n1",
	}
	require.NoError(f, signer.Sign(&good))
	frame, err := protocol.Encode(protocol.TypeCommand, "", good)
	require.NoError(f, err)
	f.Add(frame)
	for _, s := range []string{
		`{"type":"COMMAND","payload":{"execution_id":"e1","verb":"echo","args":{"message":"x"}}}`,
		`{"type":"COMMAND","payload":{"execution_id":"","verb":"echo"}}`,
		`{"type":"COMMAND","payload":{"execution_id":"e 1","verb":"nope","agent_id":"other"}}`,
		`{"type":"CANCEL","payload":{"execution_id":"e1","reason":"r"}}`,
		`{"type":"RESULT_ACK","payload":{"execution_id":"e1"}}`,
		`{"type":"ERROR","payload":{"code":"c","message":"m"}}`,
		`{"type":"WELCOME"}`, `{"type":"X"}`, `[]`, `{`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := New(Config{URL: "ws://gw/ws/agent", AgentID: testAgentID, Credential: "t",
			Handlers: map[string]HandlerFunc{"echo": echoHandler}, TrustedKeys: signer.PublicKeys()})
		require.NoError(t, err)
		s := &session{out: make(chan []byte, 64), done: make(chan struct{}), writeTimeout: time.Second}
		a.handleFrame(context.Background(), s, data)
		a.handlers.Wait()
		close(s.out)
		frames := a.pendingResults()
		for frame := range s.out {
			frames = append(frames, frame)
		}
		for _, frame := range frames {
			_, err := protocol.Decode(frame)
			require.NoError(t, err, "%s", frame)
		}
	})
}
