package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
	"go.yaml.in/yaml/v3"

	"github.com/viworks/backend-agent/viworksctl/cli"
	"github.com/viworks/backend-agent/viworksctl/config"
)

// install is a real all-in-one (bin/viworks) with demo agents, and the real
// viworksctl binary, both built from this checkout.
type install struct {
	bin    string // directory of viworks and viworksctl
	work   string // working directory: bin/ and data/ as the README has them
	server string
	port   int
	admin  string // an admin JWT minted by `viworks token`
	cfg    string // XDG_CONFIG_HOME of the logged-in viworksctl
}

func goBuild(t *testing.T, dir, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "building %s:\n%s", pkg, b)
}

func startInstall(t *testing.T) *install {
	t.Helper()
	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	goBuild(t, ".", filepath.Join(bin, "viworksctl"), ".")
	goBuild(t, "..", filepath.Join(bin, "viworks"), "./standalone")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	data := filepath.Join(work, "data")
	srv := exec.Command(filepath.Join(bin, "viworks"), "--data-dir", data, "--port", strconv.Itoa(port), "--demo-agents", "3", "--log-format", "text")
	srv.Env = append(os.Environ(), "DATABASE_URL=", "REDIS_URL=", "RATE_LIMIT_REQUESTS=1000000")
	var log bytes.Buffer
	srv.Stdout, srv.Stderr = &log, &log
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, srv.Start())
	exited := make(chan struct{})
	go func() { _ = srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("---- viworks log ----\n%s", log.String())
		}
	})
	in := &install{bin: bin, work: work, port: port, server: fmt.Sprintf("http://127.0.0.1:%d", port), cfg: filepath.Join(work, "xdg")}
	require.Eventually(t, func() bool {
		resp, err := http.Get(in.server + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "viworks not ready")
	tok, err := exec.Command(filepath.Join(bin, "viworks"), "token", "--data-dir", data, "--subject", "ctl-test", "--role", "admin").Output()
	require.NoError(t, err)
	in.admin = strings.TrimSpace(string(tok))
	require.Eventually(t, func() bool {
		var list struct{ Items []struct{ ID string } }
		return in.get(t, in.admin, "/api/v1/agents?status=online", &list) == http.StatusOK && len(list.Items) == 3
	}, 30*time.Second, 100*time.Millisecond, "the demo agents did not come online")
	return in
}

// get calls the API directly (not through viworksctl) and returns the raw body in out.
func (in *install) get(t *testing.T, token, path string, out any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, in.server+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	switch o := out.(type) {
	case *[]byte:
		*o = raw
	case nil:
	default:
		require.NoError(t, json.Unmarshal(raw, out), "%s", raw)
	}
	return resp.StatusCode
}

type result struct {
	out, err string
	code     int
}

// ctl runs the real viworksctl with the logged-in configuration (and env
// after it), stdin and args.
func (in *install) ctl(t *testing.T, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(in.bin, "viworksctl"), args...)
	cmd.Env = append(cleanEnv(), append([]string{"XDG_CONFIG_HOME=" + in.cfg, "HOME=" + in.work}, env...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{out: stdout.String(), err: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		require.NoError(t, err)
	}
	require.NotContains(t, r.err, "panic", "viworksctl %v", args)
	return r
}

// cleanEnv is the test's environment without VIWORKS_* settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VIWORKS_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.err)
}

func commandID(t *testing.T, r result) string {
	t.Helper()
	var c struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.out), &c), r.String())
	require.NotEmpty(t, c.ID)
	return c.ID
}

// TestAgainstAllInOne runs the real viworksctl against a real bin/viworks
// with three demo agents: login, send and wait, a failing verb, cancel,
// JSON output, auth errors, the configuration file and token refresh.
func TestAgainstAllInOne(t *testing.T) {
	in := startInstall(t)
	adminEnv := []string{"VIWORKS_SERVER=" + in.server, "VIWORKS_TOKEN=" + in.admin}

	key := in.ctl(t, "", adminEnv, "api-keys", "create", "--name", "ctl-test", "--role", "admin", "--key-only")
	require.Equal(t, 0, key.code, key.String())
	apiKey := strings.TrimSpace(key.out)
	require.True(t, strings.HasPrefix(apiKey, "vwk_"), apiKey)
	path := filepath.Join(in.cfg, "viworks", "config.toml")

	t.Run("a wrong API key is an auth error", func(t *testing.T) {
		r := in.ctl(t, "vwk_not-a-key\n", nil, "login", "--server", in.server, "--context", "wrong")
		require.Equal(t, cli.ExitAuth, r.code, r.String())
		require.Contains(t, r.err, "401 Unauthorized: the API key is unknown, revoked or expired")
		require.Regexp(t, `request id: [0-9a-f-]{36}`, r.err)
		_, err := os.Stat(path)
		require.ErrorIs(t, err, os.ErrNotExist, "nothing is saved for a refused key")
	})

	t.Run("login reads the key from stdin into a 0600 file", func(t *testing.T) {
		r := in.ctl(t, apiKey+"\n", nil, "login", "--server", in.server)
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.out, "logged in to "+in.server)
		for _, tc := range []struct {
			path string
			mode os.FileMode
		}{{filepath.Dir(path), 0o700}, {path, 0o600}} {
			st, err := os.Stat(tc.path)
			require.NoError(t, err)
			require.Equal(t, tc.mode, st.Mode().Perm(), tc.path)
		}
		f, err := config.Load(path)
		require.NoError(t, err)
		require.Equal(t, "default", f.CurrentContext)
		c := f.Contexts["default"]
		require.Equal(t, in.server, c.Server)
		require.Equal(t, apiKey, c.APIKey)
		require.NotEmpty(t, c.Token)
		require.True(t, c.TokenExpiresAt.After(time.Now()))
		r = in.ctl(t, "", nil, "config", "current-context")
		require.Equal(t, "default\n", r.out, r.String())
	})

	t.Run("send echo --wait succeeds", func(t *testing.T) {
		r := in.ctl(t, "", nil, "commands", "send", "echo", "--arg", "message=hello from ctl", "--target", "sim-0,sim-1", "--wait")
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.out, "sim-0  succeeded  exit 0  hello from ctl")
		require.Contains(t, r.out, "sim-1  succeeded  exit 0  hello from ctl")
		require.Contains(t, r.out, "succeeded: 2 of 2 targets succeeded, 0 failed")
		require.Contains(t, r.err, "done 2  failed 0  running 0", "the progress line")
	})

	t.Run("send to a selector --wait succeeds", func(t *testing.T) {
		r := in.ctl(t, "", nil, "commands", "send", "echo", "--args", `{"message":"all demo"}`, "--selector", "site=demo,label=role=demo", "--wait", "--max-concurrency", "2", "--priority", "high")
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.out, "3 of 3 targets succeeded")
	})

	t.Run("a failing verb exits 1", func(t *testing.T) {
		r := in.ctl(t, "", nil, "commands", "send", "fail", "--arg", "message=disk full", "--target", "sim-0,sim-1", "--wait")
		require.Equal(t, cli.ExitFailed, r.code, r.String())
		require.Contains(t, r.out, "sim-0  failed  exit 1  error: disk full")
		require.Contains(t, r.out, "sim-1  failed  exit 1  error: disk full")
		require.Contains(t, r.out, "0 of 2 targets succeeded, 2 failed")
		require.Contains(t, r.err, "failed (sim-0 failed, sim-1 failed)")
	})

	t.Run("a verb the agents lack is refused as usage", func(t *testing.T) {
		r := in.ctl(t, "", nil, "commands", "send", "no_such_verb", "--target", "sim-0", "--wait")
		require.Equal(t, cli.ExitUsage, r.code, r.String())
		require.Contains(t, r.err, "422 Unprocessable Entity")
		require.Contains(t, r.err, `do not announce the verb "no_such_verb"`)
		require.Contains(t, r.err, "verb: not among the capabilities of: sim-0")
	})

	t.Run("cancel a sleep", func(t *testing.T) {
		r := in.ctl(t, "", nil, "commands", "send", "sleep", "--arg", "seconds:=60", "--target", "sim-2", "-o", "json")
		require.Equal(t, 0, r.code, r.String())
		id := commandID(t, r)
		require.Eventually(t, func() bool {
			var c struct{ Executions []struct{ Status string } }
			return in.get(t, in.admin, "/api/v1/commands/"+id, &c) == 200 && c.Executions[0].Status == "running"
		}, 10*time.Second, 20*time.Millisecond)
		r = in.ctl(t, "", nil, "commands", "cancel", id)
		require.Equal(t, 0, r.code, r.String())
		require.Regexp(t, `status:\s+cancelled`, r.out)
		r = in.ctl(t, "", nil, "commands", "watch", id)
		require.Equal(t, cli.ExitFailed, r.code, "a cancelled command did not succeed: %s", r)
		require.Contains(t, r.out, "sim-2  cancelled")
		r = in.ctl(t, "", nil, "commands", "cancel", id)
		require.Equal(t, cli.ExitFailed, r.code, "cancelling a finished command is a conflict: %s", r)
		require.Contains(t, r.err, "409 Conflict")
	})

	t.Run("json output is the API's document", func(t *testing.T) {
		r := in.ctl(t, "", nil, "commands", "send", "echo", "--arg", "message=json", "--target", "sim-1", "--wait", "-o", "json")
		require.Equal(t, 0, r.code, r.String())
		id := commandID(t, r)
		var direct []byte
		require.Equal(t, http.StatusOK, in.get(t, in.admin, "/api/v1/commands/"+id, &direct))
		require.JSONEq(t, string(direct), r.out, "--wait -o json prints the final document")
		got := in.ctl(t, "", nil, "commands", "get", id, "-o", "json")
		require.Equal(t, 0, got.code, got.String())
		require.JSONEq(t, string(direct), got.out)
		asYAML := in.ctl(t, "", nil, "commands", "get", id, "-o", "yaml")
		require.Equal(t, 0, asYAML.code, asYAML.String())
		var fromYAML, fromJSON any
		require.NoError(t, yaml.Unmarshal([]byte(asYAML.out), &fromYAML))
		require.NoError(t, yaml.Unmarshal(direct, &fromJSON))
		require.Equal(t, fromJSON, fromYAML, "yaml holds the same document")

		for _, args := range [][]string{
			{"agents", "ls", "--status", "online", "--label", "role=demo", "-q", "sim-"},
			{"commands", "ls", "--verb", "echo", "--limit", "2"},
			{"api-keys", "ls"},
			{"audit", "ls", "--action", "command.create", "--limit", "3"},
			{"alerts", "ls"},
			{"alert-rules", "ls"},
			{"webhooks", "ls"},
			{"enrollment-secrets", "ls"},
		} {
			r := in.ctl(t, "", nil, append(args, "-o", "json")...)
			require.Equal(t, 0, r.code, "%v: %s", args, r)
			var page struct {
				Items      []map[string]any `json:"items"`
				NextCursor *string          `json:"next_cursor"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.out), &page), "%v: %s", args, r.out)
			require.NotNil(t, page.Items, args)
			table := in.ctl(t, "", nil, args...)
			require.Equal(t, 0, table.code, "%v: %s", args, table)
		}
		for _, args := range [][]string{{"agents", "get", "sim-0"}, {"agents", "health", "sim-0"}, {"agents", "telemetry", "sim-0", "--since", "5m"}, {"status"}, {"audit", "verify"}} {
			r := in.ctl(t, "", nil, append(args, "-o", "json")...)
			require.Equal(t, 0, r.code, "%v: %s", args, r)
			var doc map[string]any
			require.NoError(t, json.Unmarshal([]byte(r.out), &doc), "%v: %s", args, r.out)
			table := in.ctl(t, "", nil, args...)
			require.Equal(t, 0, table.code, "%v: %s", args, table)
		}
	})

	t.Run("errors tell not found, usage and auth apart", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			env  []string
			args []string
			code int
			want string
		}{
			{"unknown command id", nil, []string{"commands", "get", "00000000-0000-0000-0000-000000000000"}, cli.ExitNotFound, "404 Not Found"},
			{"unknown agent", nil, []string{"agents", "health", "nobody"}, cli.ExitNotFound, "404 Not Found"},
			{"refused input", nil, []string{"commands", "send", "echo", "--target", "sim-0", "--priority", "urgent"}, cli.ExitUsage, "400 Bad Request"},
			{"bad flag", nil, []string{"agents", "ls", "--colour"}, cli.ExitUsage, "unknown flag: --colour"},
			{"missing argument", nil, []string{"commands", "get"}, cli.ExitUsage, "want 1 argument(s) (ID)"},
			{"bad output format", nil, []string{"agents", "ls", "-o", "xml"}, cli.ExitUsage, "-o \"xml\""},
			{"refused token", []string{"VIWORKS_TOKEN=not-a-jwt"}, []string{"agents", "ls"}, cli.ExitAuth, "401 Unauthorized"},
			{"no such context", nil, []string{"agents", "ls", "--context", "nowhere"}, cli.ExitNotFound, `no context "nowhere"`},
			{"server down", []string{"VIWORKS_SERVER=http://127.0.0.1:1", "VIWORKS_TOKEN=t"}, []string{"status"}, cli.ExitServer, "connection refused"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := in.ctl(t, "", tc.env, tc.args...)
				require.Equal(t, tc.code, r.code, r.String())
				require.Contains(t, r.err, tc.want)
			})
		}
	})

	t.Run("VIWORKS_SERVER and VIWORKS_TOKEN work without a configuration file", func(t *testing.T) {
		r := in.ctl(t, "", append([]string{"XDG_CONFIG_HOME=" + t.TempDir()}, adminEnv...), "agents", "get", "sim-0", "-o", "json")
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.out, `"id":"sim-0"`)
	})

	t.Run("VIWORKS_SERVER elsewhere never gets the context's key or token", func(t *testing.T) {
		// Attack: a VIWORKS_SERVER set by a script or a shared shell profile
		// points at a server that collects credentials.
		var seen []string
		var mu sync.Mutex
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			mu.Lock()
			seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(body))
			mu.Unlock()
			w.WriteHeader(http.StatusUnauthorized)
		}))
		defer evil.Close()
		f, err := config.Load(path)
		require.NoError(t, err)
		c := f.Contexts["default"]
		expired := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
		c.TokenExpiresAt = &expired // a stale token would be refreshed with the key
		require.NoError(t, f.Save(path))
		for _, args := range [][]string{{"agents", "ls"}, {"commands", "send", "echo", "--target", "sim-0", "--wait"}} {
			r := in.ctl(t, "", []string{"VIWORKS_SERVER=" + evil.URL}, args...)
			require.Equal(t, cli.ExitAuth, r.code, r.String())
			require.Contains(t, r.err, "not logged in")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, req := range seen {
			require.NotContains(t, req, apiKey)
			require.NotContains(t, req, c.Token)
		}
		// The same server given explicitly is the context's own.
		r := in.ctl(t, "", []string{"VIWORKS_SERVER=" + in.server + "/"}, "agents", "ls", "-o", "json")
		require.Equal(t, 0, r.code, r.String())
	})

	t.Run("the token is refreshed before it expires and after a refusal", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			token string
			exp   time.Time
		}{
			{"expiring within the refresh margin", "", time.Now().Add(time.Minute)},
			{"refused by the server", "not-a-jwt", time.Now().Add(time.Hour)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f, err := config.Load(path)
				require.NoError(t, err)
				c := f.Contexts["default"]
				old := c.Token
				if tc.token != "" {
					c.Token = tc.token
				}
				exp := tc.exp.UTC().Truncate(time.Second)
				c.TokenExpiresAt = &exp
				require.NoError(t, f.Save(path))
				r := in.ctl(t, "", nil, "agents", "ls", "-o", "json")
				require.Equal(t, 0, r.code, r.String())
				f, err = config.Load(path)
				require.NoError(t, err)
				c = f.Contexts["default"]
				require.NotEqual(t, old, c.Token, "a new token was saved")
				require.NotEqual(t, tc.token, c.Token)
				require.True(t, c.TokenExpiresAt.After(time.Now().Add(2*time.Minute)), "%s", c.TokenExpiresAt)
				st, err := os.Stat(path)
				require.NoError(t, err)
				require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
			})
		}
	})

	t.Run("--wait polls when the event stream is refused", func(t *testing.T) {
		// Hold every event stream the key's principal may open (4 per
		// replica): viworksctl's own stream is then refused with 429.
		f, err := config.Load(path)
		require.NoError(t, err)
		tok := f.Contexts["default"].Token
		for range 4 {
			req, err := http.NewRequest(http.MethodGet, in.server+"/api/v1/events", nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			t.Cleanup(func() { _ = resp.Body.Close() })
		}
		r := in.ctl(t, "", nil, "commands", "send", "echo", "--arg", "message=polled", "--target", "sim-0", "--wait")
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.err, "event stream unavailable")
		require.Contains(t, r.err, "429 Too Many Requests")
		require.Contains(t, r.out, "sim-0  succeeded  exit 0  polled")
	})

	t.Run("preview shows the matching agents", func(t *testing.T) {
		r := in.ctl(t, "", nil, "commands", "preview", "--selector", "site=demo,label=role=demo", "-o", "json")
		require.Equal(t, 0, r.code, r.String())
		var p struct {
			Mode    string `json:"mode"`
			Matched int    `json:"matched"`
			Online  int    `json:"online"`
			Agents  []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"agents"`
			Truncated bool `json:"agents_truncated"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.out), &p), r.out)
		require.Equal(t, "all", p.Mode)
		require.Equal(t, 3, p.Matched)
		require.Equal(t, 3, p.Online)
		require.Len(t, p.Agents, 3)
		require.False(t, p.Truncated)
		table := in.ctl(t, "", nil, "commands", "preview", "--target", "sim-0", "--any")
		require.Equal(t, 0, table.code, table.String())
		require.Contains(t, table.out, "sim-0")
	})

	t.Run("templates and schedules", func(t *testing.T) {
		tpl := `{"name":"greet","verb":"echo","args":{"message":"hello {{who}}"},"parameters":{"who":{"type":"string","required":true}}}`
		r := in.ctl(t, tpl, nil, "templates", "create", "--file", "-")
		require.Equal(t, 0, r.code, r.String())
		require.Regexp(t, `version:\s+1\n`, r.out)
		r = in.ctl(t, "", nil, "templates", "get", "greet")
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.out, "who")
		r = in.ctl(t, "", nil, "commands", "send", "--template", "greet", "--param", "who=ctl", "--target", "sim-0", "--wait")
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.out, "sim-0  succeeded  exit 0  hello ctl")
		r = in.ctl(t, "", nil, "commands", "send", "--template", "greet", "--target", "sim-0")
		require.Equal(t, cli.ExitUsage, r.code, "a required parameter missing is the client's mistake: %s", r.String())
		require.Contains(t, r.err, "params.who: is required")
		r = in.ctl(t, "", nil, "commands", "send", "echo", "--template", "greet", "--target", "sim-0")
		require.Equal(t, cli.ExitUsage, r.code, r.String())

		r = in.ctl(t, "", nil, "schedules", "create", "--name", "ping", "--every", "1s", "--template", "greet", "--param", "who=schedule", "--target", "sim-1", "-o", "json")
		require.Equal(t, 0, r.code, r.String())
		var sc struct {
			ID string `json:"id"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.out), &sc), r.out)
		require.Eventually(t, func() bool {
			var doc struct {
				LastRunAt *time.Time `json:"last_run_at"`
				Runs      []struct {
					Status string `json:"status"`
				} `json:"runs"`
			}
			r := in.ctl(t, "", nil, "schedules", "get", sc.ID, "-o", "json")
			return r.code == 0 && json.Unmarshal([]byte(r.out), &doc) == nil && doc.LastRunAt != nil && len(doc.Runs) > 0 && doc.Runs[0].Status == "succeeded"
		}, 20*time.Second, 250*time.Millisecond, "the schedule runs")
		r = in.ctl(t, "", nil, "schedules", "ls")
		require.Equal(t, 0, r.code, r.String())
		require.Contains(t, r.out, "every 1s")
		require.Contains(t, r.out, "template greet")
		r = in.ctl(t, "", nil, "schedules", "pause", sc.ID)
		require.Equal(t, 0, r.code, r.String())
		require.Regexp(t, `paused:\s+true\n`, r.out)
		r = in.ctl(t, "", nil, "schedules", "create", "--name", "bad", "--cron", "0 25 * * *", "--verb", "echo", "--target", "sim-1")
		require.Equal(t, cli.ExitUsage, r.code, "422: %s", r.String())
		require.Equal(t, 0, in.ctl(t, "", nil, "schedules", "delete", sc.ID).code)
		require.Equal(t, 0, in.ctl(t, "", nil, "templates", "retire", "greet").code)
		require.Equal(t, cli.ExitNotFound, in.ctl(t, "", nil, "templates", "get", "greet").code)
	})

	t.Run("contexts", func(t *testing.T) {
		r := in.ctl(t, apiKey+"\n", nil, "login", "--server", in.server, "--context", "second")
		require.Equal(t, 0, r.code, r.String())
		r = in.ctl(t, "", nil, "config", "get-contexts")
		require.Equal(t, 0, r.code, r.String())
		require.Regexp(t, `(?m)^\s+default\s`, r.out)
		require.Regexp(t, `(?m)^\*\s+second\s`, r.out)
		r = in.ctl(t, "", nil, "config", "use-context", "default")
		require.Equal(t, 0, r.code, r.String())
		r = in.ctl(t, "", nil, "logout", "--context", "second")
		require.Equal(t, 0, r.code, r.String())
		r = in.ctl(t, "", nil, "agents", "ls", "--context", "second")
		require.Equal(t, cli.ExitAuth, r.code, "logged out: %s", r)
		require.Contains(t, r.err, "not logged in")
		r = in.ctl(t, "", nil, "config", "use-context", "nowhere")
		require.Equal(t, cli.ExitNotFound, r.code, r.String())
	})

	t.Run("completion", func(t *testing.T) {
		for _, shell := range []string{"bash", "zsh", "fish"} {
			r := in.ctl(t, "", nil, "completion", shell)
			require.Equal(t, 0, r.code, r.String())
			require.Contains(t, r.out, "viworksctl")
		}
	})

	t.Run("the README's viworksctl tour", func(t *testing.T) {
		raw, err := os.ReadFile("../README.md")
		require.NoError(t, err)
		_, rest, ok := strings.Cut(string(raw), "<!-- viworksctl:begin -->")
		require.True(t, ok, "README lacks the viworksctl markers")
		block, _, ok := strings.Cut(rest, "<!-- viworksctl:end -->")
		require.True(t, ok)
		block = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(block), "```bash"), "```")
		script := strings.ReplaceAll(block, "localhost:8080", fmt.Sprintf("localhost:%d", in.port))
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = in.work
		cmd.Env = append(cleanEnv(), "XDG_CONFIG_HOME="+t.TempDir(), "NO_COLOR=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "the README's viworksctl lines failed:\n%s", out)
		require.Contains(t, string(out), "sim-0  succeeded  exit 0  created panel user testuser")
		require.NotContains(t, string(out), "securepass123", "the password never comes back")
	})
}
