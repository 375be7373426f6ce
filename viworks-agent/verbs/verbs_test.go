package verbs

import (
	"context"
	"encoding/json"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/viworks-agent/config"
)

// scriptsDir returns a directory every user can read, with the scripts.
func scriptsDir(t *testing.T, scripts map[string]string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "viworks-agent-scripts-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	for name, body := range scripts {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755))
	}
	return dir
}

func command(t *testing.T, verb string, args any) protocol.Command {
	t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	return protocol.Command{CommandID: "c1", ExecutionID: "e1", Verb: verb, Args: raw}
}

func newVerbs(t *testing.T, cfg config.Config) *Verbs {
	t.Helper()
	cfg.Gateway, cfg.AgentID = "ws://127.0.0.1:1/ws/agent", "test"
	cfg = cfg.WithDefaults()
	v, err := New(cfg, func() map[string]float64 { return map[string]float64{"mem_total_bytes": 42} }, "1.0.0")
	require.NoError(t, err)
	return v
}

// alive reports whether pid is a process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] != 'Z'
}

func TestRunScript(t *testing.T) {
	dir := scriptsDir(t, map[string]string{
		"hello":   "#!/bin/sh\necho \"args: $1|$2 env: $VIWORKS_ARG_GREETING exec: $VIWORKS_EXECUTION_ID\"\necho oops >&2\nexit 3\n",
		"ok":      "#!/bin/sh\necho fine\n",
		"chatty":  "#!/bin/sh\nhead -c 300000 /dev/zero | tr '\\0' x\n",
		"noexec":  "#!/bin/sh\necho never\n",
		"shellme": "#!/bin/sh\necho \"$1\"\n",
	})
	require.NoError(t, os.Chmod(filepath.Join(dir, "noexec"), 0o644))
	outside := scriptsDir(t, map[string]string{"evil": "#!/bin/sh\necho evil\n"})
	require.NoError(t, os.Symlink(filepath.Join(outside, "evil"), filepath.Join(dir, "link")))
	v := newVerbs(t, config.Config{ScriptsDir: dir, Verbs: []string{config.VerbRunScript}, RunScript: config.RunScript{MaxOutputBytes: 1000}})

	for name, tc := range map[string]struct {
		args      any
		exit      int
		output    string
		errSub    string
		truncated bool
	}{
		"argv, env, stdout and stderr, exit code": {args: map[string]any{"script": "hello", "args": []string{"a b", "c"}, "env": map[string]string{"greeting": "hi"}},
			exit: 3, output: "args: a b|c env: hi exec: e1\n[stderr]\noops\n", errSub: "exit status 3"},
		"success":                 {args: map[string]any{"script": "ok"}, output: "fine\n"},
		"no shell interpretation": {args: map[string]any{"script": "shellme", "args": []string{"$(id); `id` | rm -rf /"}}, output: "$(id); `id` | rm -rf /\n"},
		"output capped":           {args: map[string]any{"script": "chatty"}, truncated: true},
		"path traversal":          {args: map[string]any{"script": "../ok"}, exit: ExitCodeBadArgs, errSub: "no path"},
		"absolute path":           {args: map[string]any{"script": "/bin/sh"}, exit: ExitCodeBadArgs, errSub: "no path"},
		"missing script":          {args: map[string]any{"script": "nope"}, exit: ExitCodeCannotRun, errSub: `no script "nope"`},
		"not executable":          {args: map[string]any{"script": "noexec"}, exit: ExitCodeCannotRun, errSub: "not an executable"},
		"symlink leaving the dir": {args: map[string]any{"script": "link"}, exit: ExitCodeCannotRun, errSub: "outside the scripts directory"},
		"unknown field":           {args: map[string]any{"script": "ok", "shell": true}, exit: ExitCodeBadArgs, errSub: "unknown field"},
		"args not strings":        {args: map[string]any{"script": "ok", "args": []int{1}}, exit: ExitCodeBadArgs, errSub: "invalid args"},
		"bad env name":            {args: map[string]any{"script": "ok", "env": map[string]string{"LD_PRELOAD=x": "y"}}, exit: ExitCodeBadArgs, errSub: "env name"},
	} {
		t.Run(name, func(t *testing.T) {
			res := v.RunScript(context.Background(), command(t, config.VerbRunScript, tc.args))
			require.Equal(t, tc.exit, res.ExitCode, res.Error)
			require.Contains(t, res.Error, tc.errSub)
			if tc.truncated {
				require.True(t, res.OutputTruncated)
				require.LessOrEqual(t, len(res.Output), 1000)
				require.True(t, strings.HasSuffix(res.Output, protocol.TruncationMarker), res.Output[len(res.Output)-40:])
				return
			}
			require.False(t, res.OutputTruncated)
			require.Equal(t, tc.output, res.Output)
		})
	}
}

// Timeout and cancel kill the script and everything it started.
func TestRunScriptKillsProcessGroup(t *testing.T) {
	pids := t.TempDir()
	dir := scriptsDir(t, map[string]string{
		"spawn": "#!/bin/sh\nsleep 300 &\necho $! > \"$VIWORKS_ARG_PIDS/$VIWORKS_EXECUTION_ID.child\"\necho $$ > \"$VIWORKS_ARG_PIDS/$VIWORKS_EXECUTION_ID.self\"\necho started\nsleep 300\n",
		"leave": "#!/bin/sh\nsleep 300 &\necho $! > \"$VIWORKS_ARG_PIDS/$VIWORKS_EXECUTION_ID.child\"\necho $$ > \"$VIWORKS_ARG_PIDS/$VIWORKS_EXECUTION_ID.self\"\necho bye\n",
	})
	v := newVerbs(t, config.Config{ScriptsDir: dir, Verbs: []string{config.VerbRunScript}, RunScript: config.RunScript{Timeout: config.Duration{Duration: time.Second}}})
	readPid := func(name string) int {
		b, err := os.ReadFile(filepath.Join(pids, name))
		require.NoError(t, err)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		require.NoError(t, err)
		return pid
	}
	run := func(execID, script string, ctx context.Context) agentsdk.Result {
		cmd := command(t, config.VerbRunScript, map[string]any{"script": script, "env": map[string]string{"pids": pids}})
		cmd.ExecutionID = execID
		return v.RunScript(ctx, cmd)
	}

	start := time.Now()
	res := run("timeout", "spawn", context.Background())
	require.Equal(t, ExitCodeTimeout, res.ExitCode)
	require.Contains(t, res.Error, "timed out after 1s; its process group was killed")
	require.Equal(t, "started\n", res.Output)
	require.Less(t, time.Since(start), 10*time.Second)

	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(300*time.Millisecond, func() { cancel(agentsdk.ErrCancelled) })
	res = run("cancel", "spawn", ctx)
	require.Equal(t, agentsdk.ExitCodeCancelled, res.ExitCode)
	require.Contains(t, res.Error, "cancelled")

	res = run("leave", "leave", context.Background())
	require.Equal(t, 0, res.ExitCode, res.Error)
	require.Equal(t, "bye\n", res.Output)

	for _, id := range []string{"timeout", "cancel", "leave"} {
		for _, kind := range []string{".self", ".child"} {
			pid := readPid(id + kind)
			require.Eventually(t, func() bool { return !alive(pid) }, 5*time.Second, 20*time.Millisecond, "%s%s (pid %d) is still running", id, kind, pid)
		}
	}
}

func TestRunScriptAsUser(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody on this host")
	}
	dir := scriptsDir(t, map[string]string{"whoami": "#!/bin/sh\necho \"$(id -u) $HOME $USER\"\n"})
	cfg := config.Config{ScriptsDir: dir, Verbs: []string{config.VerbRunScript}, RunScript: config.RunScript{User: "nobody"}}
	if os.Geteuid() != 0 {
		cfg.Gateway, cfg.AgentID = "ws://127.0.0.1:1/ws/agent", "test"
		_, err := New(cfg.WithDefaults(), nil, "1")
		require.ErrorContains(t, err, "needs the agent to run as root")
		return
	}
	v := newVerbs(t, cfg)
	res := v.RunScript(context.Background(), command(t, config.VerbRunScript, map[string]any{"script": "whoami"}))
	require.Equal(t, 0, res.ExitCode, res.Error)
	require.Equal(t, nobody.Uid+" "+nobody.HomeDir+" nobody\n", res.Output)
}

func TestDisabledVerbsNeverRun(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	dir := scriptsDir(t, map[string]string{"touch": "#!/bin/sh\ntouch " + marker + "\n"})
	hook := filepath.Join(dir, "touch")
	v := newVerbs(t, config.Config{ScriptsDir: dir, Verbs: []string{config.VerbSystemInfo},
		Service: config.Service{Units: []string{"x.service"}, Systemctl: hook}, Panel: config.Panel{CreateHook: hook, DeleteHook: hook}})
	h := v.Handlers()
	require.Len(t, h, len(config.KnownVerbs))
	for verb, args := range map[string]any{
		config.VerbRunScript:       map[string]any{"script": "touch"},
		config.VerbService:         map[string]any{"action": "status", "unit": "x.service"},
		config.VerbCreatePanelUser: map[string]any{"username": "bob"},
		config.VerbDeletePanelUser: map[string]any{"username": "bob"},
	} {
		res := h[verb](context.Background(), command(t, verb, args))
		require.Equal(t, ExitCodeDisabled, res.ExitCode, verb)
		require.Equal(t, "verb "+verb+" is disabled on this agent (not in its configuration's verbs); nothing ran", res.Error)
	}
	_, err := os.Stat(marker)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing ran")

	res := h[config.VerbSystemInfo](context.Background(), command(t, config.VerbSystemInfo, map[string]any{}))
	require.Equal(t, 0, res.ExitCode, res.Error)
	var info SystemInfo
	require.NoError(t, json.Unmarshal([]byte(res.Output), &info))
	require.Equal(t, "test", info.AgentID)
	require.Equal(t, "1.0.0", info.AgentVersion)
	require.Equal(t, []string{config.VerbSystemInfo}, info.Verbs)
	require.Equal(t, 42.0, info.Metrics["mem_total_bytes"])
	require.Positive(t, info.CPUs)
	require.NotEmpty(t, info.Kernel)
}

func TestServiceAndPanelHooks(t *testing.T) {
	dir := scriptsDir(t, map[string]string{
		"systemctl": "#!/bin/sh\necho \"systemctl $*\"\n[ \"$2\" = status ] && exit 3\nexit 0\n",
		"hook":      "#!/bin/sh\necho \"hook $* password=${VIWORKS_PANEL_PASSWORD:-none}\"\n",
	})
	v := newVerbs(t, config.Config{Verbs: []string{config.VerbService, config.VerbCreatePanelUser, config.VerbDeletePanelUser},
		Service: config.Service{Units: []string{"nginx.service"}, Systemctl: filepath.Join(dir, "systemctl")},
		Panel:   config.Panel{CreateHook: filepath.Join(dir, "hook"), DeleteHook: filepath.Join(dir, "hook")}})
	for name, tc := range map[string]struct {
		verb   string
		args   any
		exit   int
		output string
		errSub string
	}{
		"restart":            {config.VerbService, map[string]any{"action": "restart", "unit": "nginx.service"}, 0, "systemctl --no-pager restart nginx.service\n", ""},
		"status inactive":    {config.VerbService, map[string]any{"action": "status", "unit": "nginx.service"}, 3, "systemctl --no-pager status nginx.service\n", "exit status 3"},
		"unit not allowed":   {config.VerbService, map[string]any{"action": "stop", "unit": "sshd.service"}, ExitCodeDisabled, "", "not among this agent's service.units"},
		"bad action":         {config.VerbService, map[string]any{"action": "mask", "unit": "nginx.service"}, ExitCodeBadArgs, "", "action must be one of"},
		"create":             {config.VerbCreatePanelUser, map[string]any{"username": "bob", "password": "s3cret"}, 0, "hook bob password=s3cret\n", ""},
		"delete":             {config.VerbDeletePanelUser, map[string]any{"username": "bob"}, 0, "hook bob password=none\n", ""},
		"option as username": {config.VerbCreatePanelUser, map[string]any{"username": "-rf"}, ExitCodeBadArgs, "", "username must be"},
		"delete password":    {config.VerbDeletePanelUser, map[string]any{"username": "bob", "password": "x"}, ExitCodeBadArgs, "", "password is not an argument"},
	} {
		t.Run(name, func(t *testing.T) {
			res := v.Handlers()[tc.verb](context.Background(), command(t, tc.verb, tc.args))
			require.Equal(t, tc.exit, res.ExitCode, res.Error)
			require.Equal(t, tc.output, res.Output)
			require.Contains(t, res.Error, tc.errSub)
		})
	}
}
