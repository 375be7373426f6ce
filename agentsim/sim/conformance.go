package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

// Environment the conformance kit gives the agent under test.
const (
	EnvConfGatewayURL    = "VIWORKS_GATEWAY_URL"
	EnvConfEnrollURL     = "VIWORKS_ENROLL_URL"
	EnvConfSecret        = "VIWORKS_ENROLLMENT_SECRET"
	EnvConfAgentID       = "VIWORKS_AGENT_ID"
	EnvConfPublicKey     = "VIWORKS_SIGNING_PUBLIC_KEY"
	EnvConfPublicKeyFile = "VIWORKS_SIGNING_PUBLIC_KEY_FILE"
)

// DefaultConformanceTimeout is how long the kit waits for each answer.
const DefaultConformanceTimeout = 10 * time.Second

// ConformanceConfig configures a conformance run.
type ConformanceConfig struct {
	AgentCmd string        // run with sh -c; required
	AgentID  string        // suggested to the agent in VIWORKS_AGENT_ID; default conformance-0
	Timeout  time.Duration // per answer; default DefaultConformanceTimeout
	AgentLog io.Writer     // the agent's stdout and stderr; default discarded
}

// Validate reports a configuration that cannot work.
func (c ConformanceConfig) Validate() error {
	if strings.TrimSpace(c.AgentCmd) == "" {
		return errors.New("--agent-cmd is required")
	}
	if c.AgentID != "" {
		if err := protocol.CheckID("--agent-id", c.AgentID); err != nil {
			return err
		}
	}
	return nil
}

func (c *ConformanceConfig) setDefaults() {
	if c.AgentID == "" {
		c.AgentID = "conformance-0"
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultConformanceTimeout
	}
	if c.AgentLog == nil {
		c.AgentLog = io.Discard
	}
}

// CheckResult is one line of the conformance report.
type CheckResult struct {
	Name   string
	Passed bool
	Detail string
}

// conformance is one run: the gateway's side of the protocol on loopback.
type conformance struct {
	cfg    ConformanceConfig
	signer *signing.Signer
	secret string
	cred   string
	conns  chan *websocket.Conn

	enrolledID string
	enrolled   chan string
	results    []CheckResult
	heartbeat  bool
}

// agentConn is a session with the agent under test; a reader goroutine turns
// its frames into a channel so waits can time out without breaking the socket.
type agentConn struct {
	ws     *websocket.Conn
	frames chan protocol.Frame
	errs   chan error
}

// RunConformance starts the agent command against a gateway played by the
// kit and runs every check; it returns the results in order.
func RunConformance(ctx context.Context, cfg ConformanceConfig) ([]CheckResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a signing key: %w", err)
	}
	signer, err := signing.NewSigner(priv)
	if err != nil {
		return nil, err
	}
	c := &conformance{cfg: cfg, signer: signer, secret: randomToken(), cred: randomToken(),
		conns: make(chan *websocket.Conn, 4), enrolled: make(chan string, 4)}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on loopback: %w", err)
	}
	srv := &http.Server{Handler: c.mux(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()

	dir, err := os.MkdirTemp("", "agentsim-conformance-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	pubB64 := base64.StdEncoding.EncodeToString(signer.PublicKey())
	keyFile := filepath.Join(dir, "signing.pub")
	if err := os.WriteFile(keyFile, []byte(pubB64+"\n"), 0o600); err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := "127.0.0.1:" + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	cmd := exec.CommandContext(runCtx, "sh", "-c", cfg.AgentCmd) //nolint:gosec // G204: running the operator's agent command is the point
	cmd.Env = append(os.Environ(),
		EnvConfGatewayURL+"=ws://"+base+"/ws/agent", EnvConfEnrollURL+"=http://"+base+agentsdk.EnrollPath,
		EnvConfSecret+"="+c.secret, EnvConfAgentID+"="+cfg.AgentID,
		EnvConfPublicKey+"="+pubB64, EnvConfPublicKeyFile+"="+keyFile)
	cmd.Stdout, cmd.Stderr = cfg.AgentLog, cfg.AgentLog
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cancel()
		<-exited //nolint:errcheck // the agent was stopped: how it exited does not matter
	}()

	c.run(runCtx, exited)
	return c.results, nil
}

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (c *conformance) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+agentsdk.EnrollPath, func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Secret  string `json:"enrollment_secret"`
			AgentID string `json:"agent_id"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&req); err != nil || protocol.CheckID("agent_id", req.AgentID) != nil {
			http.Error(w, "a JSON body with enrollment_secret and a valid agent_id is required", http.StatusBadRequest)
			return
		}
		if req.Secret != c.secret {
			http.Error(w, "enrollment_secret is not valid (it goes in the JSON body)", http.StatusUnauthorized)
			return
		}
		select {
		case c.enrolled <- req.AgentID:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"agent_id": req.AgentID, "credential": c.cred})
	})
	up := websocket.Upgrader{}
	mux.HandleFunc("GET /ws/agent", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+c.cred {
			http.Error(w, "a valid agent credential is required", http.StatusUnauthorized)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		select {
		case c.conns <- ws:
		default:
			_ = ws.Close()
		}
	})
	return mux
}

func (c *conformance) record(name string, err error) bool {
	r := CheckResult{Name: name, Passed: err == nil}
	if err != nil {
		r.Detail = err.Error()
	}
	c.results = append(c.results, r)
	return err == nil
}

// run plays the checks in order; a check the others depend on stops the run.
func (c *conformance) run(ctx context.Context, exited <-chan error) {
	t := c.cfg.Timeout
	select {
	case id := <-c.enrolled:
		c.enrolledID = id
		c.record("enroll", nil)
	case err := <-exited:
		c.record("enroll", fmt.Errorf("the agent exited before enrolling: %v", err))
		return
	case <-time.After(t):
		c.record("enroll", errors.New("no valid enrollment (POST "+agentsdk.EnrollPath+" with the secret in the JSON body)"))
		return
	}
	conn, err := c.accept(ctx, t)
	if !c.record("hello", err) {
		return
	}
	defer func() { _ = conn.ws.Close() }()

	echo := c.command("conformance-echo", "echo", `{"message":"conformance"}`, time.Now())
	c.send(conn, protocol.TypeCommand, echo)
	c.record("echo", c.expectRun(conn, echo.ExecutionID, func(r *protocol.CommandResult) error {
		if r.Status != protocol.ResultSucceeded || r.Output != "conformance" {
			return fmt.Errorf("result %s with output %q, want succeeded with %q", r.Status, r.Output, "conformance")
		}
		return nil
	}))

	// The unacknowledged result must come back after a reconnect.
	_ = conn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseServiceRestart, "conformance: reconnect"), time.Now().Add(time.Second))
	_ = conn.ws.Close()
	conn, err = c.accept(ctx, t+agentsdk.DefaultMaxBackoff)
	if err != nil {
		c.record("result_resent_until_ack", fmt.Errorf("reconnecting: %w", err))
		return
	}
	_, err = c.await(conn, t, func(f protocol.Frame) (bool, error) {
		r, ok := f.Payload.(*protocol.CommandResult)
		return ok && r.ExecutionID == echo.ExecutionID, nil
	})
	if err == nil {
		c.send(conn, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: echo.ExecutionID, Outcome: protocol.OutcomeStored})
		err = c.quiet(conn, time.Second, echo.ExecutionID)
	}
	c.record("result_resent_until_ack", err)

	bad := c.command("conformance-bad-signature", "echo", `{"message":"x"}`, time.Now())
	bad.RequestedBy = "someone-else" // changed after signing
	c.send(conn, protocol.TypeCommand, bad)
	c.record("bad_signature", c.expectRejected(conn, bad.ExecutionID, "bad signature"))

	expired := c.command("conformance-expired", "echo", `{"message":"x"}`, time.Now().Add(-time.Hour))
	c.send(conn, protocol.TypeCommand, expired)
	c.record("expired", c.expectRejected(conn, expired.ExecutionID, "expired"))

	replay := c.command("conformance-replay", "echo", `{"message":"x"}`, time.Now())
	replay.Nonce = echo.Nonce
	c.sign(&replay)
	c.send(conn, protocol.TypeCommand, replay)
	c.record("replay", c.expectRejected(conn, replay.ExecutionID, "nonce replay"))

	c.send(conn, protocol.TypeCommand, echo) // the same execution again
	c.record("duplicate", c.quiet(conn, 2*time.Second, echo.ExecutionID))

	sleep := c.command("conformance-cancel", "sleep", `{"seconds":60}`, time.Now())
	c.send(conn, protocol.TypeCommand, sleep)
	_, err = c.await(conn, t, func(f protocol.Frame) (bool, error) {
		a, ok := f.Payload.(*protocol.Ack)
		return ok && a.ExecutionID == sleep.ExecutionID, nil
	})
	if err == nil {
		c.send(conn, protocol.TypeCancel, protocol.Cancel{ExecutionID: sleep.ExecutionID, Reason: "conformance"})
		_, err = c.await(conn, t, func(f protocol.Frame) (bool, error) {
			r, ok := f.Payload.(*protocol.CommandResult)
			return ok && r.ExecutionID == sleep.ExecutionID, nil
		})
	}
	c.record("cancel", err)

	if !c.heartbeat {
		_, _ = c.await(conn, 3*time.Second, func(f protocol.Frame) (bool, error) { return f.Type == protocol.TypeHeartbeat, nil })
	}
	if c.heartbeat {
		c.record("heartbeat", nil)
	} else {
		c.record("heartbeat", errors.New("no valid HEARTBEAT within the announced interval"))
	}
}

// accept waits for the agent's next WebSocket, checks its HELLO and answers
// WELCOME.
func (c *conformance) accept(ctx context.Context, wait time.Duration) (*agentConn, error) {
	var ws *websocket.Conn
	select {
	case ws = <-c.conns:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(wait):
		return nil, errors.New("the agent did not open the WebSocket (GET /ws/agent with Authorization: Bearer <credential>)")
	}
	conn := &agentConn{ws: ws, frames: make(chan protocol.Frame, 64), errs: make(chan error, 1)}
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				conn.errs <- err
				close(conn.frames)
				return
			}
			f, err := protocol.Decode(data)
			if err != nil {
				conn.errs <- fmt.Errorf("invalid frame %.200s: %w", data, err)
				close(conn.frames)
				return
			}
			conn.frames <- f
		}
	}()
	first, err := c.next(conn, c.cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("waiting for HELLO: %w", err)
	}
	hello, ok := first.Payload.(*protocol.Hello)
	switch {
	case !ok:
		return nil, fmt.Errorf("the first frame is %s, not HELLO", first.Type)
	case hello.AgentID != c.enrolledID:
		return nil, fmt.Errorf("HELLO agent_id %q is not the enrolled %q", hello.AgentID, c.enrolledID)
	}
	version, ok := protocol.Negotiate(hello.ProtocolVersions)
	if !ok {
		return nil, fmt.Errorf("HELLO offers protocol versions %v, none supported", hello.ProtocolVersions)
	}
	c.send(conn, protocol.TypeWelcome, protocol.Welcome{
		SessionID: randomToken(), HeartbeatIntervalS: 1, TelemetryIntervalS: 1,
		SigningKeyID: c.signer.KeyID(), SigningPublicKey: base64.StdEncoding.EncodeToString(c.signer.PublicKey()),
		ServerTime: time.Now().UTC(), ProtocolVersion: version, OutputLimit: protocol.MaxOutputBytes,
		MaxFrameBytes: protocol.DefaultReadLimit,
	})
	return conn, nil
}

// next returns the agent's next frame, noting heartbeats.
func (c *conformance) next(conn *agentConn, wait time.Duration) (protocol.Frame, error) {
	select {
	case f, ok := <-conn.frames:
		if !ok {
			return protocol.Frame{}, <-conn.errs
		}
		if f.Type == protocol.TypeHeartbeat {
			c.heartbeat = true
		}
		return f, nil
	case <-time.After(wait):
		return protocol.Frame{}, fmt.Errorf("nothing within %s", wait)
	}
}

// await reads frames until match accepts one (or fails), for at most wait.
func (c *conformance) await(conn *agentConn, wait time.Duration, match func(protocol.Frame) (bool, error)) (protocol.Frame, error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := c.next(conn, time.Until(deadline))
		if err != nil {
			return f, err
		}
		ok, err := match(f)
		if err != nil || ok {
			return f, err
		}
	}
}

// expectRun expects ACK received before the COMMAND_RESULT of execID, then
// checks the result and acknowledges it.
func (c *conformance) expectRun(conn *agentConn, execID string, check func(*protocol.CommandResult) error) error {
	acked := false
	f, err := c.await(conn, c.cfg.Timeout, func(f protocol.Frame) (bool, error) {
		switch p := f.Payload.(type) {
		case *protocol.Ack:
			if p.ExecutionID == execID && p.State == protocol.AckReceived {
				acked = true
			}
		case *protocol.CommandResult:
			if p.ExecutionID != execID {
				return false, nil
			}
			if !acked {
				return false, errors.New("COMMAND_RESULT before ACK received")
			}
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	return check(f.Payload.(*protocol.CommandResult))
}

// expectRejected expects a refused COMMAND: no ACK, and a failed
// COMMAND_RESULT with exit code 126 and "rejected: <reason>".
func (c *conformance) expectRejected(conn *agentConn, execID, reason string) error {
	f, err := c.await(conn, c.cfg.Timeout, func(f protocol.Frame) (bool, error) {
		switch p := f.Payload.(type) {
		case *protocol.Ack:
			if p.ExecutionID == execID {
				return false, fmt.Errorf("the COMMAND was acknowledged (%s) although it must be refused (%s)", p.State, reason)
			}
		case *protocol.CommandResult:
			return p.ExecutionID == execID, nil
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	r := f.Payload.(*protocol.CommandResult)
	c.send(conn, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: execID, Outcome: protocol.OutcomeStored})
	if r.Status != protocol.ResultFailed || r.ExitCode != agentsdk.ExitCodeRejected || r.Error != "rejected: "+reason {
		return fmt.Errorf("result %s, exit code %d, error %q; want failed, %d, %q", r.Status, r.ExitCode, r.Error, agentsdk.ExitCodeRejected, "rejected: "+reason)
	}
	return nil
}

// quiet checks that no COMMAND_RESULT of execID arrives for a while (it was
// acknowledged: it must not be sent, nor the execution run, again).
func (c *conformance) quiet(conn *agentConn, wait time.Duration, execID string) error {
	_, err := c.await(conn, wait, func(f protocol.Frame) (bool, error) {
		if r, ok := f.Payload.(*protocol.CommandResult); ok && r.ExecutionID == execID {
			return false, fmt.Errorf("COMMAND_RESULT of %s sent again after RESULT_ACK", execID)
		}
		return false, nil
	})
	if err != nil && strings.HasPrefix(err.Error(), "nothing within") {
		return nil
	}
	return err
}

// command builds a COMMAND for the agent under test, signed, valid for five
// minutes from issued.
func (c *conformance) command(execID, verb, args string, issued time.Time) protocol.Command {
	cmd := protocol.Command{
		CommandID: "cmd-" + execID, ExecutionID: execID, AgentID: c.enrolledID, Verb: verb,
		Args: json.RawMessage(args), RequestedBy: "conformance", IssuedAt: issued.UTC(),
		ExpiresAt: issued.Add(5 * time.Minute).UTC(), Nonce: randomToken(),
	}
	c.sign(&cmd)
	return cmd
}

func (c *conformance) sign(cmd *protocol.Command) {
	if err := c.signer.Sign(cmd); err != nil {
		panic(fmt.Sprintf("signing a conformance COMMAND: %v", err)) // the kit's own input: a bug
	}
}

func (c *conformance) send(conn *agentConn, typ string, payload any) {
	b, err := protocol.Encode(typ, "", payload)
	if err == nil {
		_ = conn.ws.SetWriteDeadline(time.Now().Add(c.cfg.Timeout))
		_ = conn.ws.WriteMessage(websocket.TextMessage, b)
	}
}

// ConformanceMain is `agentsim conformance`: it runs the checks against
// --agent-cmd, prints one line per check to stdout and returns the exit code
// (0 all passed, 1 a check failed, 2 a usage error).
func ConformanceMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agentsim conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg ConformanceConfig
	var logFile string
	fs.StringVar(&cfg.AgentCmd, "agent-cmd", "", "the agent to check, run with sh -c; it finds the gateway in $"+EnvConfGatewayURL+
		", the secret in $"+EnvConfSecret+", the key to pin in $"+EnvConfPublicKey+" (base64) or $"+EnvConfPublicKeyFile+" (required)")
	fs.StringVar(&cfg.AgentID, "agent-id", "conformance-0", "agent id suggested to the agent in $"+EnvConfAgentID)
	fs.DurationVar(&cfg.Timeout, "timeout", DefaultConformanceTimeout, "how long to wait for each answer")
	fs.StringVar(&logFile, "agent-log", "", "write the agent's output to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if logFile != "" {
		f, err := os.Create(logFile)
		if err != nil {
			fmt.Fprintf(stderr, "agentsim conformance: %v\n", err)
			return 2
		}
		defer func() { _ = f.Close() }()
		cfg.AgentLog = f
	}
	results, err := RunConformance(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "agentsim conformance: %v\n", err)
		return 2
	}
	failed := 0
	for _, r := range results {
		if r.Passed {
			fmt.Fprintf(stdout, "PASS  %s\n", r.Name)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "FAIL  %s: %s\n", r.Name, r.Detail)
	}
	if failed > 0 || len(results) < len(ConformanceChecks) {
		fmt.Fprintf(stdout, "%d of %d checks passed\n", len(results)-failed, len(ConformanceChecks))
		return 1
	}
	fmt.Fprintf(stdout, "all %d checks passed\n", len(results))
	return 0
}

// ConformanceChecks are the checks of a full run, in order.
var ConformanceChecks = []string{"enroll", "hello", "echo", "result_resent_until_ack", "bad_signature", "expired", "replay", "duplicate", "cancel", "heartbeat"}
