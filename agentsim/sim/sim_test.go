package sim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

func cmd(verb, args string) protocol.Command {
	return protocol.Command{CommandID: "c1", ExecutionID: "e1", Verb: verb, Args: json.RawMessage(args)}
}

func TestVerbs(t *testing.T) {
	bad := func(msg string) agentsdk.Result {
		return agentsdk.Result{ExitCode: ExitCodeBadArgs, Error: "invalid args: " + msg}
	}
	cases := []struct {
		name, verb, args string
		want             agentsdk.Result
	}{
		{"echo", VerbEcho, `{"message":"hi there"}`, agentsdk.Result{Output: "hi there"}},
		{"echo no args", VerbEcho, ``, agentsdk.Result{}},
		{"echo null args", VerbEcho, `null`, agentsdk.Result{}},
		{"echo extra fields", VerbEcho, `{"message":"x","other":1}`, agentsdk.Result{Output: "x"}},
		{"echo non-string", VerbEcho, `{"message":42}`, bad("message must be a string")},
		{"echo array args", VerbEcho, `["x"]`, bad("must be a JSON object")},
		{"echo broken json", VerbEcho, `{"message":`, bad("must be a JSON object")},
		{"sleep zero", VerbSleep, `{"seconds":0}`, agentsdk.Result{Output: "slept 0s"}},
		{"sleep fraction", VerbSleep, `{"seconds":0.01}`, agentsdk.Result{Output: "slept 10ms"}},
		{"sleep missing", VerbSleep, `{}`, bad("seconds is required")},
		{"sleep string", VerbSleep, `{"seconds":"5"}`, bad("seconds must be a number")},
		{"sleep negative", VerbSleep, `{"seconds":-1}`, bad("seconds must be between 0 and 3600")},
		{"sleep too long", VerbSleep, `{"seconds":3600.5}`, bad("seconds must be between 0 and 3600")},
		{"fail", VerbFail, `{"message":"disk on fire"}`, agentsdk.Result{ExitCode: 1, Error: "disk on fire"}},
		{"fail default", VerbFail, `{}`, agentsdk.Result{ExitCode: 1, Error: "simulated failure"}},
		{"fail bad", VerbFail, `{"message":true}`, bad("message must be a string")},
		{"create user", VerbCreatePanelUser, `{"username":"testuser","password":"securepass123"}`,
			agentsdk.Result{Output: "created panel user testuser"}},
		{"create user no password", VerbCreatePanelUser, `{"username":"ops.bot-1"}`,
			agentsdk.Result{Output: "created panel user ops.bot-1"}},
		{"create user missing", VerbCreatePanelUser, `{"password":"securepass123"}`, bad("username is required")},
		{"create user empty", VerbCreatePanelUser, `{"username":""}`, bad("username is required")},
		{"create user number", VerbCreatePanelUser, `{"username":7}`, bad("username must be a string")},
		{"create user bad chars", VerbCreatePanelUser, `{"username":"a b;rm -rf"}`,
			bad("username must be 1..64 letters, digits, '.', '_' or '-', not starting with '.' or '-'")},
		{"create user bad password", VerbCreatePanelUser, `{"username":"u","password":5}`, bad("password must be a string")},
	}
	h := Handlers()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := h[tc.verb](context.Background(), cmd(tc.verb, tc.args))
			require.Equal(t, tc.want, got)
			require.NotContains(t, got.Output+got.Error, "securepass123")
		})
	}
}

func TestSleepHonoursCancel(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan agentsdk.Result, 1)
	go func() { done <- Sleep(ctx, cmd(VerbSleep, `{"seconds":3600}`)) }()
	cancel(errors.New("operator request"))
	select {
	case r := <-done:
		require.Equal(t, protocol.ResultFailed, r.Status())
		require.Equal(t, agentsdk.ExitCodeCancelled, r.ExitCode)
		require.Contains(t, r.Error, "operator request")
	case <-time.After(5 * time.Second):
		t.Fatal("sleep ignored cancellation")
	}
}

func TestTelemetry(t *testing.T) {
	tel := NewTelemetry(7)
	prev := tel.Sample()
	for _, k := range []string{"cpu_percent", "mem_percent", "mem_used_bytes", "disk_percent", "load1", "load5", "load15", "net_rx_bytes", "net_tx_bytes"} {
		require.Contains(t, prev, k)
	}
	for range 500 {
		m := tel.Sample()
		for _, k := range []string{"cpu_percent", "mem_percent", "disk_percent"} {
			require.True(t, m[k] >= 0 && m[k] <= 100, "%s=%v", k, m[k])
		}
		require.GreaterOrEqual(t, m["net_rx_bytes"], prev["net_rx_bytes"])
		require.GreaterOrEqual(t, m["net_tx_bytes"], prev["net_tx_bytes"])
		require.Greater(t, m["mem_used_bytes"], 0.0)
		require.GreaterOrEqual(t, m["load1"], 0.0)
		prev = m
	}
	require.Equal(t, NewTelemetry(3).Sample(), NewTelemetry(3).Sample(), "same seed, same machine")
}

func TestTelemetryHeldUntilConnected(t *testing.T) {
	f := &Fleet{}
	sample := f.heldUntilConnected(func() map[string]float64 { return map[string]float64{"cpu_percent": 1} })
	require.Nil(t, sample(), "nothing before every agent connected")
	f.allConnected.Store(true)
	require.Equal(t, map[string]float64{"cpu_percent": 1}, sample())
}

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels("role=gateway, env = prod ,empty=")
	require.NoError(t, err)
	require.Equal(t, map[string]string{"role": "gateway", "env": "prod", "empty": ""}, got)

	got, err = ParseLabels("")
	require.NoError(t, err)
	require.Nil(t, got)

	for in, want := range map[string]string{
		"role":                          `"role" is not key=value`,
		"=x":                            "empty key",
		"a=1,,b=2":                      "empty entry",
		"a=1,":                          "empty entry",
		"a=1,a=2":                       `key "a" given twice`,
		"k=" + strings.Repeat("v", 257): "at most 256 bytes",
	} {
		_, err := ParseLabels(in)
		require.ErrorContains(t, err, want, in)
	}
}

func TestParseFlags(t *testing.T) {
	t.Setenv(EnvEnrollmentSecret, "")
	base := []string{"--gateway", "ws://127.0.0.1:8081/ws/agent", "--agents", "3", "--enrollment-secret", "s3cret"}

	o, err := ParseFlags(append(base, "--prefix", "lab-", "--site", "eu", "--labels", "role=web",
		"--start-index", "10", "--connect-rate", "50", "--telemetry-interval", "5s", "--log-format", "json",
		"--min-backoff", "100ms", "--max-backoff", "2s", "--heartbeat-interval", "3s"))
	require.NoError(t, err)
	require.Equal(t, Options{
		Gateway: "ws://127.0.0.1:8081/ws/agent", Agents: 3, Prefix: "lab-", StartIndex: 10,
		EnrollmentSecret: "s3cret", Site: "eu", Labels: map[string]string{"role": "web"},
		ConnectRate: 50, TelemetryInterval: 5 * time.Second, LogLevel: "info", LogFormat: "json",
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, HeartbeatInterval: 3 * time.Second,
		TrustOnFirstUse: true,
	}, o)

	o, err = ParseFlags(append(base, "--signing-public-key", "/etc/viworks/signing.pub", "--trust-on-first-use=false"))
	require.NoError(t, err)
	require.Equal(t, "/etc/viworks/signing.pub", o.SigningPublicKey)
	require.False(t, o.TrustOnFirstUse)
	require.False(t, o.InsecureSkipVerify)
	o, err = ParseFlags(append(base, "--trust-on-first-use=false", "--insecure-skip-verify"))
	require.NoError(t, err)
	require.True(t, o.InsecureSkipVerify)

	o, err = ParseFlags(base)
	require.NoError(t, err)
	require.Equal(t, "sim-", o.Prefix)
	require.Equal(t, 0, o.StartIndex)
	require.Equal(t, 500.0, o.ConnectRate)
	require.Equal(t, time.Duration(0), o.TelemetryInterval)
	require.True(t, o.TrustOnFirstUse, "trust on first use by default")
	require.Empty(t, o.SigningPublicKey)
	require.False(t, o.InsecureSkipVerify)

	_, err = ParseFlags([]string{"-h"})
	require.ErrorIs(t, err, flag.ErrHelp)

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown flag":    {append(base, "--nope"), "flag provided but not defined: -nope"},
		"bad int":         {append(base, "--agents", "many"), `invalid value "many" for flag -agents`},
		"positional":      {append(base, "extra"), `unexpected argument "extra"`},
		"no gateway":      {[]string{"--agents", "1", "--enrollment-secret", "s"}, "--gateway is required"},
		"http gateway":    {append(base, "--gateway", "http://x/ws/agent"), "must be a ws:// or wss:// URL"},
		"zero agents":     {append(base, "--agents", "0"), "--agents must be at least 1"},
		"neg start":       {append(base, "--start-index", "-1"), "--start-index must not be negative"},
		"no secret":       {[]string{"--gateway", "ws://h/ws/agent", "--agents", "1"}, "--enrollment-secret (or $AGENT_ENROLLMENT_SECRET) is required"},
		"spaced prefix":   {append(base, "--prefix", "a b"), "--prefix must not contain whitespace"},
		"long prefix":     {append(base, "--prefix", strings.Repeat("p", 128)), "--prefix is too long"},
		"bad rate":        {append(base, "--connect-rate", "0"), "--connect-rate must be greater than 0"},
		"neg telemetry":   {append(base, "--telemetry-interval", "-1s"), "--telemetry-interval must not be negative"},
		"bad duration":    {append(base, "--telemetry-interval", "5"), `invalid value "5" for flag -telemetry-interval`},
		"neg heartbeat":   {append(base, "--heartbeat-interval", "-1s"), "--heartbeat-interval must not be negative"},
		"neg backoff":     {append(base, "--max-backoff", "-1s"), "--min-backoff and --max-backoff must not be negative"},
		"max below min":   {append(base, "--min-backoff", "3s", "--max-backoff", "2s"), "--min-backoff (3s) must not exceed --max-backoff (2s)"},
		"max below sdk":   {append(base, "--max-backoff", "100ms"), "--min-backoff (500ms) must not exceed --max-backoff (100ms)"},
		"bad level":       {append(base, "--log-level", "loud"), `--log-level "loud"`},
		"bad format":      {append(base, "--log-format", "xml"), `--log-format "xml"`},
		"bad labels":      {append(base, "--labels", "x"), `"x" is not key=value`},
		"neg source ips":  {append(base, "--source-ips", "-1"), "--source-ips must be between 0 (off) and 254"},
		"many source ips": {append(base, "--source-ips", "255"), "--source-ips must be between 0 (off) and 254"},
		"remote source ips": {append(base, "--gateway", "ws://gw.example:8081/ws/agent", "--source-ips", "2"),
			`--source-ips needs a loopback gateway (127.x.x.x or localhost), not "gw.example"`},
		"private source ips": {append(base, "--gateway", "ws://10.0.0.5:8081/ws/agent", "--source-ips", "2"),
			`--source-ips needs a loopback gateway (127.x.x.x or localhost), not "10.0.0.5"`},
		"ipv6 source ips": {append(base, "--gateway", "ws://[::1]:8081/ws/agent", "--source-ips", "2"),
			`--source-ips needs a loopback gateway (127.x.x.x or localhost), not "::1"`},
		"no trust": {append(base, "--trust-on-first-use=false"),
			"no COMMAND signing key is trusted: give --signing-public-key FILE, keep --trust-on-first-use, or (tests only) --insecure-skip-verify"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseFlags(tc.args)
			require.ErrorContains(t, err, tc.want)
		})
	}

	o, err = ParseFlags(append(base, "--host-telemetry", "--source-ips", "254"))
	require.NoError(t, err)
	require.True(t, o.HostTelemetry)
	require.Equal(t, 254, o.SourceIPs)
	for _, gw := range []string{"ws://localhost:8081/ws/agent", "wss://LOCALHOST/ws/agent", "ws://127.1.2.3:1/ws/agent"} {
		o, err = ParseFlags(append(base, "--gateway", gw, "--source-ips", "4"))
		require.NoError(t, err, gw)
		require.Equal(t, 4, o.SourceIPs)
	}
	o, err = ParseFlags(base)
	require.NoError(t, err)
	require.False(t, o.HostTelemetry, "simulated telemetry by default")
	require.Zero(t, o.SourceIPs, "no source spreading by default")

	t.Setenv(EnvEnrollmentSecret, "from-env")
	o, err = ParseFlags([]string{"--gateway", "ws://h/ws/agent", "--agents", "1"})
	require.NoError(t, err)
	require.Equal(t, "from-env", o.EnrollmentSecret)
}

func TestMainFlagErrorExits2(t *testing.T) {
	t.Setenv(EnvEnrollmentSecret, "")
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"--agents", "x"}, &stderr)
	require.Equal(t, 2, code)
	require.Equal(t, 1, strings.Count(stderr.String(), "\n"), stderr.String())
	require.True(t, strings.HasPrefix(stderr.String(), "agentsim: "))

	stderr.Reset()
	require.Equal(t, 0, Main(context.Background(), []string{"--help"}, &stderr))
	require.Contains(t, stderr.String(), "--gateway")
	require.Contains(t, stderr.String(), "-host-telemetry")
	require.Contains(t, stderr.String(), "-source-ips N")
}

// fakeGateway accepts agents with the right bearer secret, welcomes them
// (announcing its signing key) and runs one echo command on each, signed
// unless unsigned is set (then no key is announced either).
type fakeGateway struct {
	signer   *signing.Signer
	unsigned bool

	mu        sync.Mutex
	hellos    map[string]protocol.Hello
	results   map[string]protocol.CommandResult
	telemetry map[string]map[string]float64 // last TELEMETRY metrics by agent
	remoteIPs map[string]string             // source address of the WebSocket by agent
	refused   int
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	s, err := signing.NewSigner(priv)
	require.NoError(t, err)
	return &fakeGateway{signer: s, hellos: map[string]protocol.Hello{}, results: map[string]protocol.CommandResult{},
		telemetry: map[string]map[string]float64{}, remoteIPs: map[string]string{}}
}

func (g *fakeGateway) handler(t *testing.T, secret string) http.Handler {
	up := websocket.Upgrader{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == agentsdk.EnrollPath {
			// Enrollment, as the real gateway does it: the secret buys a credential.
			var req struct {
				Secret  string `json:"enrollment_secret"`
				AgentID string `json:"agent_id"`
			}
			if json.NewDecoder(r.Body).Decode(&req) != nil || req.Secret != secret {
				g.mu.Lock()
				g.refused++
				g.mu.Unlock()
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]string{"agent_id": req.AgentID, "credential": "cred-" + req.AgentID})
			return
		}
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer cred-") {
			g.mu.Lock()
			g.refused++
			g.mu.Unlock()
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			g.mu.Lock()
			g.remoteIPs[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer cred-")] = host
			g.mu.Unlock()
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		go func() {
			defer ws.Close()
			read := func() (protocol.Frame, bool) {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return protocol.Frame{}, false
				}
				f, err := protocol.Decode(data)
				if err != nil {
					t.Errorf("invalid frame from agent: %v: %s", err, data)
					return protocol.Frame{}, false
				}
				return f, true
			}
			send := func(typ string, p any) {
				b, _ := protocol.Encode(typ, "", p)
				_ = ws.WriteMessage(websocket.TextMessage, b)
			}
			f, ok := read()
			if !ok {
				return
			}
			hello := f.Payload.(*protocol.Hello)
			g.mu.Lock()
			g.hellos[hello.AgentID] = *hello
			g.mu.Unlock()
			welcome := protocol.Welcome{SessionID: "s-" + hello.AgentID, HeartbeatIntervalS: 30, TelemetryIntervalS: 30, ServerTime: time.Now().UTC()}
			if !g.unsigned {
				welcome.SigningKeyID, welcome.SigningPublicKey = g.signer.KeyID(), signing.EncodePublicKey(g.signer.PublicKey())
			}
			send(protocol.TypeWelcome, welcome)
			now := time.Now().UTC()
			command := protocol.Command{
				CommandID: "c", ExecutionID: "e-" + hello.AgentID, AgentID: hello.AgentID,
				Verb: VerbEcho, Args: json.RawMessage(`{"message":"hello ` + hello.AgentID + `"}`),
				RequestedBy: "test", IssuedAt: now, ExpiresAt: now.Add(time.Minute), Nonce: "n-" + hello.AgentID,
			}
			if !g.unsigned {
				if err := g.signer.Sign(&command); err != nil {
					t.Errorf("signing: %v", err)
					return
				}
			}
			send(protocol.TypeCommand, command)
			for {
				f, ok := read()
				if !ok {
					return
				}
				if tel, isTel := f.Payload.(*protocol.Telemetry); isTel {
					g.mu.Lock()
					g.telemetry[hello.AgentID] = tel.Metrics
					g.mu.Unlock()
				}
				if res, isRes := f.Payload.(*protocol.CommandResult); isRes {
					g.mu.Lock()
					g.results[hello.AgentID] = *res
					g.mu.Unlock()
					send(protocol.TypeResultAck, protocol.ResultAck{ExecutionID: res.ExecutionID})
				}
			}
		}()
	})
}

func TestMainRunsFleet(t *testing.T) {
	g := newFakeGateway(t)
	srv := httptest.NewServer(g.handler(t, "boot-secret"))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/agent"

	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"--gateway", url, "--agents", "3", "--prefix", "sim-", "--start-index", "4",
			"--enrollment-secret", "boot-secret", "--site", "lab", "--labels", "role=web,env=test",
			"--connect-rate", "1000", "--log-format", "json"}, &stderr)
	}()

	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.results) == 3
	}, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "all agents connected") },
		5*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code)
	case <-time.After(10 * time.Second):
		t.Fatal("agentsim did not stop")
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range []string{"sim-4", "sim-5", "sim-6"} {
		h, ok := g.hellos[id]
		require.True(t, ok, id)
		require.Equal(t, "lab", h.Site)
		require.Equal(t, Version, h.Version)
		require.Equal(t, map[string]string{"role": "web", "env": "test"}, h.Labels)
		require.Equal(t, []string{VerbCreatePanelUser, VerbEcho, VerbFail, VerbSleep}, h.Capabilities)
		r := g.results[id]
		require.Equal(t, protocol.ResultSucceeded, r.Status)
		require.Equal(t, "hello "+id, r.Output)
	}
	require.Zero(t, g.refused)
	require.Contains(t, stderr.String(), `"total":3`)
	require.NotContains(t, stderr.String(), "boot-secret")
}

// runFleet runs Main with args against a fake gateway until every agent of
// ids reported its command result, then stops it; it returns Main's stderr.
func runFleet(t *testing.T, g *fakeGateway, gatewayHost string, args []string, ids []string, until func() bool) string {
	t.Helper()
	srv := httptest.NewServer(g.handler(t, "s3cret"))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/agent"
	if gatewayHost != "" {
		url = strings.Replace(url, "127.0.0.1", gatewayHost, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, append([]string{"--gateway", url, "--agents", strconv.Itoa(len(ids)), "--enrollment-secret", "s3cret",
			"--connect-rate", "1000", "--log-format", "json"}, args...), &stderr)
	}()
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, id := range ids {
			if g.results[id].Status != protocol.ResultSucceeded {
				return false
			}
		}
		return until == nil || until()
	}, 10*time.Second, 10*time.Millisecond, stderr.String())
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("agentsim did not stop")
	}
	return stderr.String()
}

// TestFleetSpreadsSourceIPs checks that with --source-ips 3 agent i connects
// from 127.0.0.(1 + i%3).
func TestFleetSpreadsSourceIPs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux accepts every 127.0.0.0/8 address on loopback")
	}
	ids := []string{"sim-0", "sim-1", "sim-2", "sim-3", "sim-4"}
	want := map[string]string{"sim-0": "127.0.0.1", "sim-1": "127.0.0.2", "sim-2": "127.0.0.3", "sim-3": "127.0.0.1", "sim-4": "127.0.0.2"}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run("gateway "+host, func(t *testing.T) {
			g := newFakeGateway(t)
			stderr := runFleet(t, g, host, []string{"--source-ips", "3"}, ids, nil)
			g.mu.Lock()
			defer g.mu.Unlock()
			require.Equal(t, want, g.remoteIPs)
			require.Zero(t, g.refused)
			require.Contains(t, stderr, `"source_ips":3`)
			require.Contains(t, stderr, `"last":"127.0.0.3"`)
		})
	}

	// Without the flag every agent dials from the default address.
	g := newFakeGateway(t)
	runFleet(t, g, "", nil, ids[:2], nil)
	g.mu.Lock()
	defer g.mu.Unlock()
	require.Equal(t, map[string]string{"sim-0": "127.0.0.1", "sim-1": "127.0.0.1"}, g.remoteIPs)
}

// TestFleetTelemetryWhenConnected checks that held telemetry flows once the
// whole fleet is connected.
func TestFleetTelemetryWhenConnected(t *testing.T) {
	ids := []string{"sim-0", "sim-1"}
	g := newFakeGateway(t)
	both := func() bool { return len(g.telemetry["sim-0"]) > 0 && len(g.telemetry["sim-1"]) > 0 }
	stderr := runFleet(t, g, "", []string{"--telemetry-interval", "50ms", "--telemetry-when-connected"}, ids, both)
	require.Contains(t, stderr, `"telemetry_when_connected":true`)
}

// TestFleetHostTelemetry checks that --host-telemetry reports this machine's
// numbers (uptime_s is not among the simulated ones) and that every agent
// reports the same machine.
func TestFleetHostTelemetry(t *testing.T) {
	if _, err := os.Stat("/proc/uptime"); err != nil {
		t.Skip("no /proc/uptime here")
	}
	ids := []string{"sim-0", "sim-1"}
	g := newFakeGateway(t)
	got := func() bool {
		for _, id := range ids {
			if _, ok := g.telemetry[id]["uptime_s"]; !ok {
				return false
			}
		}
		return true
	}
	stderr := runFleet(t, g, "", []string{"--host-telemetry", "--telemetry-interval", "50ms"}, ids, got)
	require.Contains(t, stderr, "agents report this host's telemetry")
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		m := g.telemetry[id]
		require.Greater(t, m["uptime_s"], 0.0, id)
		require.Contains(t, m, "mem_used_bytes", id)
		require.Contains(t, m, "cpu_percent", id)
		require.InDelta(t, g.telemetry[ids[0]]["uptime_s"], m["uptime_s"], 60, "the same host")
	}

	// The simulated numbers by default.
	g = newFakeGateway(t)
	sim := func() bool { return len(g.telemetry["sim-0"]) > 0 }
	runFleet(t, g, "", []string{"--telemetry-interval", "50ms"}, ids[:1], sim)
	g.mu.Lock()
	defer g.mu.Unlock()
	require.NotContains(t, g.telemetry["sim-0"], "uptime_s")
	require.Contains(t, g.telemetry["sim-0"], "cpu_percent")
}

// TestFleetVerifiesCommands runs one agent per trust setting against a
// gateway that signs (or not) and checks what the agent made of the command.
func TestFleetVerifiesCommands(t *testing.T) {
	signed := newFakeGateway(t)
	pubPEM, err := signing.EncodePublicKeyPEM(signed.signer.PublicKey())
	require.NoError(t, err)
	dir := t.TempDir()
	rightKey := filepath.Join(dir, "platform.pub")
	require.NoError(t, os.WriteFile(rightKey, pubPEM, 0o644))
	otherPub, _, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	wrongKey := filepath.Join(dir, "other.pub")
	require.NoError(t, os.WriteFile(wrongKey, []byte(signing.EncodePublicKey(otherPub)), 0o644))

	unsigned := newFakeGateway(t)
	unsigned.unsigned = true

	for _, tc := range []struct {
		name    string
		gateway *fakeGateway
		args    []string
		wantErr string // "" succeeded
	}{
		{"trust on first use", signed, nil, ""},
		{"pinned key", signed, []string{"--signing-public-key", rightKey, "--trust-on-first-use=false"}, ""},
		{"pinned key wins over TOFU", signed, []string{"--signing-public-key", wrongKey}, "rejected: unknown signing key"},
		{"unsigned gateway with TOFU", unsigned, nil, "rejected: no trusted signing key"},
		{"unsigned gateway, insecure", unsigned, []string{"--insecure-skip-verify"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.gateway
			g.mu.Lock()
			g.results = map[string]protocol.CommandResult{}
			g.mu.Unlock()
			srv := httptest.NewServer(g.handler(t, "s3cret"))
			defer srv.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, 1)
			var stderr syncBuffer
			go func() {
				done <- Main(ctx, append([]string{"--gateway", "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws/agent",
					"--agents", "1", "--enrollment-secret", "s3cret", "--log-format", "json"}, tc.args...), &stderr)
			}()
			require.Eventually(t, func() bool {
				g.mu.Lock()
				defer g.mu.Unlock()
				return len(g.results) == 1
			}, 10*time.Second, 10*time.Millisecond, stderr.String())
			cancel()
			require.Equal(t, 0, <-done)

			g.mu.Lock()
			r := g.results["sim-0"]
			g.mu.Unlock()
			if tc.wantErr == "" {
				require.Equal(t, protocol.ResultSucceeded, r.Status, r.Error)
				require.Equal(t, "hello sim-0", r.Output)
				return
			}
			require.Equal(t, protocol.ResultFailed, r.Status)
			require.Equal(t, agentsdk.ExitCodeRejected, r.ExitCode)
			require.Equal(t, tc.wantErr, r.Error)
			require.Contains(t, stderr.String(), `"msg":"command rejected"`)
		})
	}

	// A key file that cannot be read stops agentsim before any agent starts.
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"--gateway", "ws://127.0.0.1:1/ws/agent", "--agents", "1",
		"--enrollment-secret", "s", "--signing-public-key", filepath.Join(dir, "missing.pub")}, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "--signing-public-key: signing: public key file")
	require.Contains(t, stderr.String(), "does not exist")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FuzzVerbs checks that no argument object makes a verb panic or report a
// success with an error, and that create_panel_user never echoes the password.
func FuzzVerbs(f *testing.F) {
	for _, s := range []string{``, `null`, `{}`, `{"message":"x"}`, `{"seconds":1e308}`, `{"seconds":-0}`,
		`{"username":"u","password":"pw-secret"}`, `[1,2]`, `"str"`, `{"message":{"a":1}}`} {
		f.Add(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // sleep returns at once
	f.Fuzz(func(t *testing.T, args string) {
		for verb, h := range Handlers() {
			r := h(ctx, cmd(verb, args))
			if r.ExitCode == 0 && r.Error != "" {
				t.Fatalf("%s: exit code 0 with error %q", verb, r.Error)
			}
			var a struct {
				Username, Password any
			}
			if verb == VerbCreatePanelUser && json.Unmarshal([]byte(args), &a) == nil {
				pw, _ := a.Password.(string)
				user, _ := a.Username.(string)
				if len(pw) > 3 && !strings.Contains(user, pw) && strings.Contains(r.Output+r.Error, pw) {
					t.Fatalf("password leaked: %+v", r)
				}
			}
		}
	})
}

func TestAgentStateDir(t *testing.T) {
	for id, want := range map[string]string{
		"web-1":  "/s/web-1",
		"dc/web": "/s/dc%2Fweb",
		"..":     "/s/%2E%2E",
		".":      "/s/%2E",
	} {
		if got := AgentStateDir("/s", id); got != want {
			t.Errorf("AgentStateDir(%q) = %q, want %q", id, got, want)
		}
	}
	if got := AgentStateDir("", "web-1"); got != "" {
		t.Errorf("no base: %q", got)
	}
}
