package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/signing"
)

// The tests here start the real binaries: bin/viworks (the all-in-one) and
// viworks-agent, built once into a temporary directory.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "viworks-agent-bin-")
		if buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{"viworks-agent": ".", "viworks": "github.com/viworks/backend-agent/standalone"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	require.NoError(t, buildErr)
	return binDir
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a started binary whose output goes to a log file.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	require.NoError(t, err)
	cmd := exec.Command(filepath.Join(binaries(t), name), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, log: logf.Name(), done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("--- %s log:\n%s", name, tail(string(b), 60))
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
}

// allInOne is bin/viworks on embedded storage.
type allInOne struct {
	base, wsURL, token string
	secret, pubKey     string // enrollment secret, base64 signing public key
}

func startAllInOne(t *testing.T) allInOne {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	port := freePort(t)
	env := []string{"DATABASE_URL=", "REDIS_URL=", "LOG_FORMAT=text", "RATE_LIMIT_REQUESTS=1000000"}
	p := startProc(t, "viworks", env, "--data-dir", dataDir, "--port", strconv.Itoa(port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	require.Eventually(t, func() bool {
		select {
		case <-p.done:
			return true
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond)
	select {
	case <-p.done:
		t.Fatal("viworks exited")
	default:
	}
	tok, err := exec.Command(filepath.Join(binaries(t), "viworks"), "token", "--data-dir", dataDir, "--subject", "agent-test", "--role", "operator").Output()
	require.NoError(t, err)
	secret, err := os.ReadFile(filepath.Join(dataDir, "enrollment.secret"))
	require.NoError(t, err)
	pub, err := signing.LoadPublicKey(filepath.Join(dataDir, "signing.key"))
	require.NoError(t, err)
	return allInOne{base: base, wsURL: fmt.Sprintf("ws://127.0.0.1:%d/ws/agent", port), token: strings.TrimSpace(string(tok)),
		secret: strings.TrimSpace(string(secret)), pubKey: signing.EncodePublicKey(pub)}
}

func (a allInOne) do(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(t, json.Unmarshal(raw, out), "%s", raw)
	}
	return resp.StatusCode
}

type execution struct {
	Status   string `json:"status"`
	ExitCode *int   `json:"exit_code"`
	Output   string `json:"output"`
	Error    string `json:"error"`
}

type commandView struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Executions []execution `json:"executions"`
}

var finalStatus = map[string]bool{"succeeded": true, "failed": true, "partially_succeeded": true, "cancelled": true, "timed_out": true, "expired": true}

// command posts a command for agentID and returns its id.
func (a allInOne) command(t *testing.T, agentID, verb string, args map[string]any, timeoutS int) string {
	t.Helper()
	var c commandView
	require.Equal(t, http.StatusAccepted, a.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": verb, "args": args, "agent_targets": []string{agentID}, "timeout_seconds": timeoutS}, &c))
	return c.ID
}

func (a allInOne) wait(t *testing.T, id string, within time.Duration) commandView {
	t.Helper()
	var c commandView
	require.Eventually(t, func() bool {
		require.Equal(t, http.StatusOK, a.do(t, http.MethodGet, "/api/v1/commands/"+id, nil, &c))
		return finalStatus[c.Status]
	}, within, 50*time.Millisecond, "command %s did not finish", id)
	require.Len(t, c.Executions, 1)
	return c
}

// proxy forwards TCP connections to target until cut, which drops every
// connection and refuses new ones until restore: the gateway unreachable.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cutOff bool
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cutOff {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close(); _ = c.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = up.Close(); _ = c.Close() }()
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = false
}

// agentHost is one viworks-agent installation: configuration, scripts and
// state directory.
type agentHost struct {
	id, config, stateDir, scripts, work string
}

// scripts the tests run; $VIWORKS_ARG_WORK is a directory they write to.
var testScripts = map[string]string{
	"report": "#!/bin/sh\necho \"hello $1 $2\"\necho \"to stderr\" >&2\nexit 7\n",
	"spawn": "#!/bin/sh\nsleep 300 &\necho $! > \"$VIWORKS_ARG_WORK/child.pid\"\necho $$ > \"$VIWORKS_ARG_WORK/self.pid\"\n" +
		"echo started\nsleep 300\n",
	"once": "#!/bin/sh\necho run >> \"$VIWORKS_ARG_WORK/runs\"\nsleep \"$1\"\necho \"finished $VIWORKS_EXECUTION_ID\"\n",
}

func newAgentHost(t *testing.T, id, gateway, secret, pubKey string, extra string) agentHost {
	t.Helper()
	root := t.TempDir()
	h := agentHost{id: id, config: filepath.Join(root, "agent.toml"), stateDir: filepath.Join(root, "state"),
		scripts: filepath.Join(root, "scripts"), work: filepath.Join(root, "work")}
	require.NoError(t, os.Mkdir(h.scripts, 0o755))
	require.NoError(t, os.Mkdir(h.work, 0o755))
	for name, body := range testScripts {
		require.NoError(t, os.WriteFile(filepath.Join(h.scripts, name), []byte(body), 0o755))
	}
	secretFile := filepath.Join(root, "enrollment.secret")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))
	cfg := fmt.Sprintf(`gateway = %q
agent_id = %q
state_dir = %q
enrollment_secret_file = %q
signing_public_key = %q
scripts_dir = %q
verbs = ["run_script", "system_info"]
collection_interval = "1s"

[run_script]
timeout = "3s"

[log]
level = "debug"
format = "text"
%s`, gateway, id, h.stateDir, secretFile, pubKey, h.scripts, extra)
	require.NoError(t, os.WriteFile(h.config, []byte(cfg), 0o600))
	return h
}

func (h agentHost) start(t *testing.T) *proc {
	t.Helper()
	return startProc(t, "viworks-agent", nil, "--config", h.config)
}

func memTotalBytes(t *testing.T) float64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseFloat(strings.Fields(v)[0], 64)
			require.NoError(t, err)
			return kb * 1024
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// alive reports whether pid is a running process (not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] != 'Z'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return pid
}

// TestAgentOnAllInOne runs viworks-agent against the real all-in-one: it
// enrolls, comes online with this host's telemetry, runs scripts, kills a
// timed-out script's whole process group, is refused verbs it did not
// enable, and delivers a result exactly once across a kill -9.
func TestAgentOnAllInOne(t *testing.T) {
	aio := startAllInOne(t)
	gw := newProxy(t, strings.TrimPrefix(strings.TrimSuffix(aio.wsURL, "/ws/agent"), "ws://"))
	h := newAgentHost(t, "host-1", "ws://"+gw.addr()+"/ws/agent", aio.secret, aio.pubKey, "")
	agent := h.start(t)
	top := t // agents restarted in a subtest outlive it

	t.Run("enrolls and comes online with host telemetry", func(t *testing.T) {
		var ag struct {
			Status       string   `json:"status"`
			Capabilities []string `json:"capabilities"`
			Hostname     string   `json:"hostname"`
		}
		require.Eventually(t, func() bool {
			return aio.do(t, http.MethodGet, "/api/v1/agents/"+h.id, nil, &ag) == http.StatusOK && ag.Status == "online"
		}, 30*time.Second, 100*time.Millisecond)
		require.Equal(t, []string{"run_script", "system_info"}, ag.Capabilities)
		st, err := os.Stat(filepath.Join(h.stateDir, "credential"))
		require.NoError(t, err, "the enrolled credential is kept")
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

		want := memTotalBytes(t)
		var tel struct {
			Series []struct {
				Metric string `json:"metric"`
				Points []struct {
					Avg float64 `json:"avg"`
				} `json:"points"`
			} `json:"series"`
		}
		require.Eventually(t, func() bool {
			code := aio.do(t, http.MethodGet, "/api/v1/agents/"+h.id+"/telemetry?metric=mem_total_bytes&metric=cpu_percent&metric=disk_total_bytes&step=60s", nil, &tel)
			if code != http.StatusOK || len(tel.Series) < 3 {
				return false
			}
			for _, s := range tel.Series {
				if len(s.Points) == 0 {
					return false
				}
			}
			return true
		}, 30*time.Second, 200*time.Millisecond)
		for _, s := range tel.Series {
			if s.Metric == "mem_total_bytes" {
				got := s.Points[len(s.Points)-1].Avg
				require.InEpsilon(t, want, got, 0.01, "memory total %v is within 1%% of /proc/meminfo's %v", got, want)
			}
		}
	})

	t.Run("run_script returns output and exit code", func(t *testing.T) {
		c := aio.wait(t, aio.command(t, h.id, "run_script", map[string]any{"script": "report", "args": []string{"a b", "c"}}, 30), 30*time.Second)
		e := c.Executions[0]
		require.Equal(t, "failed", e.Status)
		require.NotNil(t, e.ExitCode)
		require.Equal(t, 7, *e.ExitCode)
		require.Equal(t, "hello a b c\n[stderr]\nto stderr\n", e.Output)
		require.Equal(t, "exit status 7", e.Error)

		c = aio.wait(t, aio.command(t, h.id, "system_info", map[string]any{}, 30), 30*time.Second)
		require.Equal(t, "succeeded", c.Status, c.Executions[0].Error)
		var info struct {
			AgentID string `json:"agent_id"`
			CPUs    int    `json:"cpus"`
		}
		require.NoError(t, json.Unmarshal([]byte(c.Executions[0].Output), &info))
		require.Equal(t, h.id, info.AgentID)
		require.Positive(t, info.CPUs)
	})

	t.Run("a timeout kills the script and its children", func(t *testing.T) {
		c := aio.wait(t, aio.command(t, h.id, "run_script", map[string]any{"script": "spawn", "env": map[string]string{"work": h.work}}, 60), 30*time.Second)
		e := c.Executions[0]
		require.Equal(t, "failed", e.Status)
		require.Equal(t, 124, *e.ExitCode)
		require.Equal(t, "started\n", e.Output)
		require.Contains(t, e.Error, "timed out after 3s; its process group was killed")
		for _, f := range []string{"self.pid", "child.pid"} {
			pid := readPid(t, filepath.Join(h.work, f))
			require.Eventually(t, func() bool { return !alive(pid) }, 5*time.Second, 20*time.Millisecond, "%s (pid %d) is left running", f, pid)
		}
	})

	t.Run("a disabled verb is refused", func(t *testing.T) {
		// The agent does not announce it, so the platform refuses it
		// outright; the agent itself refuses such a COMMAND too
		// (TestAgentRefusesForgedCommands).
		code := aio.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "service", "args": map[string]any{"action": "stop", "unit": "sshd.service"}, "agent_targets": []string{h.id}}, nil)
		require.Equal(t, http.StatusUnprocessableEntity, code)
	})

	t.Run("a result finished while the gateway was unreachable arrives once after kill -9", func(t *testing.T) {
		id := aio.command(t, h.id, "run_script", map[string]any{"script": "once", "args": []string{"1"}, "env": map[string]string{"work": h.work}}, 120)
		runs := filepath.Join(h.work, "runs")
		require.Eventually(t, func() bool { _, err := os.Stat(runs); return err == nil }, 20*time.Second, 10*time.Millisecond, "the script started")
		gw.cut() // the gateway is unreachable before the script finishes
		var view struct {
			Executions []struct {
				ID string `json:"id"`
			} `json:"executions"`
		}
		require.Equal(t, http.StatusOK, aio.do(t, http.MethodGet, "/api/v1/commands/"+id, nil, &view))
		require.Len(t, view.Executions, 1)
		outbox := filepath.Join(h.stateDir, "outbox")
		require.Eventually(t, func() bool {
			_, err := os.Stat(filepath.Join(outbox, view.Executions[0].ID+".json"))
			return err == nil
		}, 20*time.Second, 10*time.Millisecond, "the finished result waits in the outbox on disk")
		agent.kill9(t)

		gw.restore()
		agent = h.start(top)
		c := aio.wait(t, id, 60*time.Second)
		require.Equal(t, "succeeded", c.Status, c.Executions[0].Error)
		e := c.Executions[0]
		require.Equal(t, 0, *e.ExitCode)
		require.True(t, strings.HasPrefix(e.Output, "finished "), e.Output)
		b, err := os.ReadFile(runs)
		require.NoError(t, err)
		require.Equal(t, "run\n", string(b), "the script ran once")
		require.Eventually(t, func() bool {
			entries, err := os.ReadDir(outbox)
			return err == nil && len(entries) == 0
		}, 20*time.Second, 20*time.Millisecond, "RESULT_ACK emptied the outbox")
		// Nothing more arrives: the result was recorded once.
		time.Sleep(2 * time.Second)
		again := aio.wait(t, id, time.Second)
		require.Equal(t, e, again.Executions[0])
		logs, err := os.ReadFile(agent.log)
		require.NoError(t, err)
		require.NotContains(t, string(logs), "panic")
	})

	t.Run("a script running at kill -9 is reported interrupted, not run again", func(t *testing.T) {
		work := filepath.Join(h.work, "interrupted")
		require.NoError(t, os.Mkdir(work, 0o755))
		id := aio.command(t, h.id, "run_script", map[string]any{"script": "once", "args": []string{"30"}, "env": map[string]string{"work": work}}, 120)
		runs := filepath.Join(work, "runs")
		require.Eventually(t, func() bool { _, err := os.Stat(runs); return err == nil }, 20*time.Second, 10*time.Millisecond, "the script started")
		agent.kill9(t)
		agent = h.start(top)
		c := aio.wait(t, id, 60*time.Second)
		e := c.Executions[0]
		require.Equal(t, "failed", e.Status)
		require.Equal(t, 75, *e.ExitCode)
		require.Equal(t, "interrupted: the agent stopped while this execution ran; it is not run again", e.Error)
		time.Sleep(2 * time.Second)
		b, err := os.ReadFile(runs)
		require.NoError(t, err)
		require.Equal(t, "run\n", string(b), "the script was not run again")
	})
}
