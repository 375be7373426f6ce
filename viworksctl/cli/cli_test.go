package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/viworksctl/client"
)

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]any
		err  string
	}{
		{"site=paris", map[string]any{"site": "paris"}, ""},
		{"site=paris,label=role=web,label=env=prod,capability=echo", map[string]any{"site": "paris", "capability": "echo", "labels": map[string]string{"role": "web", "env": "prod"}}, ""},
		{"label=k=", map[string]any{"labels": map[string]string{"k": ""}}, ""},
		{"site", nil, "want site=S"},
		{"site=a,site=b", nil, "site given twice"},
		{"label=novalue", nil, "label wants k=v"},
		{"region=eu", nil, `unknown key "region"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSelector(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Equal(t, ExitUsage, ExitCode(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		kvs  []string
		want map[string]any
		err  string
	}{
		{"none", "", nil, map[string]any{}, ""},
		{"json object", `{"message":"hi","n":2}`, nil, map[string]any{"message": "hi", "n": float64(2)}, ""},
		{"strings stay strings", "", []string{"password=123", "url=a=b"}, map[string]any{"password": "123", "url": "a=b"}, ""},
		{"k:=json", "", []string{"seconds:=1.5", "dry:=true", "tags:=[\"a\"]"}, map[string]any{"seconds": 1.5, "dry": true, "tags": []any{"a"}}, ""},
		{"--arg overrides --args", `{"message":"a"}`, []string{"message=b"}, map[string]any{"message": "b"}, ""},
		{"not an object", `[1]`, nil, nil, "want a JSON object"},
		{"bad json value", "", []string{"n:=nope"}, nil, "is not JSON"},
		{"no =", "", []string{"message"}, nil, "want k=v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseArgs(tc.raw, tc.kvs)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				require.Equal(t, ExitUsage, ExitCode(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestExitCodes(t *testing.T) {
	api := func(status int) error { return fmt.Errorf("wrapped: %w", &client.APIError{Status: status}) }
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{withCode(ExitFailed, errors.New("command failed")), ExitFailed},
		{api(400), ExitUsage},
		{api(422), ExitUsage},
		{api(401), ExitAuth},
		{api(403), ExitAuth},
		{api(404), ExitNotFound},
		{api(409), ExitFailed},
		{api(429), ExitServer},
		{api(500), ExitServer},
		{api(503), ExitServer},
		{&client.NetworkError{Err: errors.New("connection refused")}, ExitServer},
		{errors.New(`unknown command "x"`), ExitUsage},
	} {
		require.Equal(t, tc.want, ExitCode(tc.err), "%v", tc.err)
	}
}

// TestEveryCommandHasExamples walks the tree: every command a user runs
// shows examples in its --help, and the root's help documents the exit codes.
func TestEveryCommandHasExamples(t *testing.T) {
	a := &app{io: IO{Getenv: func(string) string { return "" }}}
	root := a.root()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Parent() != nil && c.Parent().Name() == "completion" || c.Name() == "completion" {
			return
		}
		require.NotEmpty(t, c.Example, "viworksctl %s has no examples", c.CommandPath())
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	var out bytes.Buffer
	code := Main(context.Background(), []string{"--help"}, IO{In: strings.NewReader(""), Out: &out, Err: &out, Getenv: func(string) string { return "" }})
	require.Equal(t, ExitOK, code)
	for _, want := range []string{"Exit codes:", "3  authentication", "4  not found", "5  server or network", "VIWORKS_TOKEN", "VIWORKS_SERVER"} {
		require.Contains(t, out.String(), want)
	}
}

// TestFollowFallsBackToPolling: the event stream breaks after one event;
// the command is then followed by polling until it ends.
func TestFollowFallsBackToPolling(t *testing.T) {
	defer func(p time.Duration) { pollInterval = p }(pollInterval)
	pollInterval = 20 * time.Millisecond
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/events":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "event: execution.status\ndata: {\"type\":\"execution.status\",\"execution_id\":\"e1\",\"agent_id\":\"a1\",\"status\":\"running\"}\n\n")
			// and the connection drops
		case "/api/v1/commands/c1":
			status, exec := "running", `{"id":"e1","agent_id":"a1","status":"running"}`
			if gets.Add(1) >= 4 {
				status, exec = "succeeded", `{"id":"e1","agent_id":"a1","status":"succeeded","exit_code":0,"output":"hi"}`
			}
			fmt.Fprintf(w, `{"id":"c1","status":%q,"executions":[%s]}`, status, exec)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	a := &app{io: IO{Out: &out, Err: &errOut, Getenv: func(string) string { return "" }}, format: "table"}
	c, err := client.New(nil, client.Config{Server: srv.URL})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.follow(ctx, c, "c1"))
	require.Contains(t, errOut.String(), "event stream dropped")
	require.Contains(t, errOut.String(), "done 1  failed 0  running 0")
	require.Contains(t, out.String(), "a1  succeeded  exit 0  hi")
	require.Contains(t, out.String(), "command c1 succeeded: 1 of 1 targets succeeded, 0 failed")
	require.GreaterOrEqual(t, gets.Load(), int32(4))
}

// TestPreviewContract: the request and answer of POST /api/v1/commands/preview
// as agreed (the route is on another branch; main_test.go runs it against
// bin/viworks once the server has it).
func TestPreviewContract(t *testing.T) {
	const answer = `{"mode":"any","matched":150,"online":148,"stale":1,"offline":1,"agents":[{"id":"web-1","status":"online","site":"paris","hostname":"web-1.paris"},{"id":"web-2","status":"stale","site":"paris","hostname":"web-2.paris"}],"agents_truncated":true}`
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/api/v1/commands/preview", r.URL.Path)
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, "Bearer tok", r.Header.Get("Authorization"))
		body, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answer)
	}))
	defer srv.Close()
	env := map[string]string{"VIWORKS_SERVER": srv.URL, "VIWORKS_TOKEN": "tok", "XDG_CONFIG_HOME": t.TempDir()}
	for _, tc := range []struct {
		format string
		check  func(t *testing.T, out string)
	}{
		{"json", func(t *testing.T, out string) { require.Equal(t, answer+"\n", out, "the API's document unchanged") }},
		{"table", func(t *testing.T, out string) {
			require.Regexp(t, `matched:\s+150`, out)
			require.Regexp(t, `(?m)^web-2\s+stale\s+paris\s+web-2.paris$`, out)
			require.Contains(t, out, "(first 2 of 150 agents shown)")
		}},
	} {
		t.Run(tc.format, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(context.Background(), []string{"commands", "preview", "--selector", "site=paris,label=role=web", "--any", "--verb", "echo", "-o", tc.format},
				IO{In: strings.NewReader(""), Out: &out, Err: &errOut, Getenv: func(k string) string { return env[k] }})
			require.Equal(t, ExitOK, code, errOut.String())
			require.JSONEq(t, `{"selector":{"site":"paris","labels":{"role":"web"}},"mode":"any","verb":"echo"}`, string(body))
			tc.check(t, out.String())
		})
	}
}

func TestLoopback(t *testing.T) {
	for host, want := range map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true, "127.8.9.10": true, "10.0.0.1": false, "viworks.example.com": false, "": false} {
		require.Equal(t, want, loopback(host), host)
	}
}

func TestCells(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{nil, "-"},
		{"", "-"},
		{"sim-0", "sim-0"},
		{"2026-12-03T14:58:45.118145878Z", "2026-12-03T14:58:45Z"},
		{"2026-12-03T15:58:45.5+01:00", "2026-12-03T14:58:45Z"},
		{"2026-12-03T14:58:45Z", "2026-12-03T14:58:45Z"},
		{json.Number("42"), "42"},
		{true, "true"},
		{[]any{"echo", "sleep"}, "echo,sleep"},
		{[]any{}, "-"},
		{map[string]any{"z": "1", "a": json.Number("2")}, "a=2,z=1"},
	} {
		require.Equal(t, tc.want, str(tc.in), "%v", tc.in)
	}
}
