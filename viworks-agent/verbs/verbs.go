// Package verbs implements the commands viworks-agent runs on its host:
// run_script, service, create_panel_user, delete_panel_user and system_info.
// Every verb is denied unless the configuration enables it; programs run
// without a shell, in their own process group, killed on timeout or cancel.
package verbs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/viworks-agent/config"
)

// safePath is the PATH programs run with.
const safePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var (
	scriptNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	usernameRE   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`)
)

// Verbs runs the verbs of one configuration.
type Verbs struct {
	cfg       config.Config
	telemetry func() map[string]float64
	version   string
	cred      *syscall.Credential // run_script's user; nil: the agent's own
	userEnv   []string            // HOME, USER, LOGNAME of that user
}

// New returns the verbs of cfg. telemetry (may be nil) feeds system_info;
// version is the agent's.
func New(cfg config.Config, telemetry func() map[string]float64, version string) (*Verbs, error) {
	v := &Verbs{cfg: cfg, telemetry: telemetry, version: version}
	if name := cfg.RunScript.User; name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("run_script.user: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		if int(uid) != os.Geteuid() {
			if os.Geteuid() != 0 {
				return nil, fmt.Errorf("run_script.user %q: switching users needs the agent to run as root", name)
			}
			cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
			if ids, err := u.GroupIds(); err == nil {
				for _, g := range ids {
					if n, err := strconv.ParseUint(g, 10, 32); err == nil {
						cred.Groups = append(cred.Groups, uint32(n))
					}
				}
			}
			v.cred = cred
		}
		v.userEnv = []string{"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username}
	}
	return v, nil
}

// Handlers returns a handler for every verb this agent knows: the enabled
// ones do their work, the others answer that they are disabled and run
// nothing. Verbs it does not know get the SDK's unknown-verb result.
func (v *Verbs) Handlers() map[string]agentsdk.HandlerFunc {
	impl := map[string]agentsdk.HandlerFunc{
		config.VerbRunScript:       v.RunScript,
		config.VerbService:         v.Service,
		config.VerbCreatePanelUser: v.CreatePanelUser,
		config.VerbDeletePanelUser: v.DeletePanelUser,
		config.VerbSystemInfo:      v.SystemInfo,
	}
	out := make(map[string]agentsdk.HandlerFunc, len(impl))
	for verb, h := range impl {
		if v.cfg.Enabled(verb) {
			out[verb] = h
		} else {
			out[verb] = disabled(verb)
		}
	}
	return out
}

func disabled(verb string) agentsdk.HandlerFunc {
	return func(context.Context, protocol.Command) agentsdk.Result {
		return agentsdk.Result{ExitCode: ExitCodeDisabled,
			Error: fmt.Sprintf("verb %s is disabled on this agent (not in its configuration's verbs); nothing ran", verb)}
	}
}

func badArgs(err error) agentsdk.Result {
	return agentsdk.Result{ExitCode: ExitCodeBadArgs, Error: "invalid args: " + err.Error()}
}

// decodeArgs decodes a command's args object strictly into dst.
func decodeArgs(raw json.RawMessage, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the args object")
	}
	return nil
}

// baseEnv is the environment every program gets: a fixed PATH and the ids
// of the execution.
func baseEnv(cmd protocol.Command) []string {
	return []string{"PATH=" + safePath, "LANG=C.UTF-8",
		"VIWORKS_EXECUTION_ID=" + cmd.ExecutionID, "VIWORKS_COMMAND_ID=" + cmd.CommandID}
}

// runScriptArgs are run_script's args.
type runScriptArgs struct {
	Script string            `json:"script"`
	Args   []string          `json:"args"`
	Env    map[string]string `json:"env"` // given to the script as VIWORKS_ARG_<NAME>
}

// RunScript runs args.script, a file of scripts_dir, with args.args as its
// arguments and args.env as VIWORKS_ARG_<NAME> variables, as run_script.user.
// The output is its stdout, then its stderr after a "[stderr]" line; the
// exit code is its own (124 after the timeout, 130 when cancelled).
func (v *Verbs) RunScript(ctx context.Context, cmd protocol.Command) agentsdk.Result {
	var a runScriptArgs
	if err := decodeArgs(cmd.Args, &a); err != nil {
		return badArgs(err)
	}
	if !scriptNameRE.MatchString(a.Script) {
		return badArgs(fmt.Errorf("script must be the name of a file in the scripts directory (1..128 of A-Z a-z 0-9 . _ -, no path), not %q", a.Script))
	}
	path, err := v.scriptPath(a.Script)
	if err != nil {
		return agentsdk.Result{ExitCode: ExitCodeCannotRun, Error: err.Error()}
	}
	env := append(baseEnv(cmd), v.userEnv...)
	for _, k := range slices.Sorted(maps.Keys(a.Env)) {
		if !envNameRE.MatchString(k) {
			return badArgs(fmt.Errorf("env name %q must be 1..64 of A-Z a-z 0-9 _, not starting with a digit", k))
		}
		if strings.ContainsRune(a.Env[k], 0) {
			return badArgs(fmt.Errorf("env %s contains a NUL byte", k))
		}
		env = append(env, "VIWORKS_ARG_"+strings.ToUpper(k)+"="+a.Env[k])
	}
	for i, arg := range a.Args {
		if strings.ContainsRune(arg, 0) {
			return badArgs(fmt.Errorf("args[%d] contains a NUL byte", i))
		}
	}
	return program{path: path, args: a.Args, env: env, dir: v.cfg.ScriptsDir, cred: v.cred,
		timeout: v.cfg.RunScript.Timeout.Duration, maxOutput: v.cfg.RunScript.MaxOutputBytes}.run(ctx)
}

// scriptPath resolves a script name to an executable regular file that is
// inside scripts_dir, symbolic links followed.
func (v *Verbs) scriptPath(name string) (string, error) {
	dir, err := filepath.EvalSymlinks(v.cfg.ScriptsDir)
	if err != nil {
		return "", fmt.Errorf("scripts directory: %w", err)
	}
	path, err := filepath.EvalSymlinks(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("no script %q in the scripts directory", name)
	}
	if rel, err := filepath.Rel(dir, path); err != nil || rel != filepath.Base(path) {
		return "", fmt.Errorf("script %q leads outside the scripts directory", name)
	}
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("script %q is not an executable file", name)
	}
	return path, nil
}

// serviceArgs are service's args.
type serviceArgs struct {
	Action string `json:"action"`
	Unit   string `json:"unit"`
}

var serviceActions = []string{"status", "start", "stop", "restart"}

// Service runs `systemctl --no-pager ACTION UNIT` for an allow-listed unit.
func (v *Verbs) Service(ctx context.Context, cmd protocol.Command) agentsdk.Result {
	var a serviceArgs
	if err := decodeArgs(cmd.Args, &a); err != nil {
		return badArgs(err)
	}
	if !slices.Contains(serviceActions, a.Action) {
		return badArgs(fmt.Errorf("action must be one of %s, not %q", strings.Join(serviceActions, ", "), a.Action))
	}
	if !slices.Contains(v.cfg.Service.Units, a.Unit) {
		return agentsdk.Result{ExitCode: ExitCodeDisabled,
			Error: fmt.Sprintf("unit %q is not among this agent's service.units; nothing ran", a.Unit)}
	}
	path, err := lookPath(v.cfg.Service.Systemctl)
	if err != nil {
		return agentsdk.Result{ExitCode: ExitCodeCannotRun, Error: err.Error()}
	}
	return program{path: path, args: []string{"--no-pager", a.Action, a.Unit}, env: baseEnv(cmd), dir: "/",
		timeout: v.cfg.RunScript.Timeout.Duration, maxOutput: v.cfg.RunScript.MaxOutputBytes}.run(ctx)
}

func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		return name, nil
	}
	for _, d := range filepath.SplitList(safePath) {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s", name, safePath)
}

// panelUserArgs are the args of create_panel_user and delete_panel_user.
type panelUserArgs struct {
	Username string `json:"username"`
	Password string `json:"password"` // create only; given to the hook as VIWORKS_PANEL_PASSWORD
}

// CreatePanelUser runs panel_users.create_hook with the username as its
// argument and the password, if any, in VIWORKS_PANEL_PASSWORD (never on the
// command line, where other users could see it).
func (v *Verbs) CreatePanelUser(ctx context.Context, cmd protocol.Command) agentsdk.Result {
	return v.panelHook(ctx, cmd, v.cfg.Panel.CreateHook, true)
}

// DeletePanelUser runs panel_users.delete_hook with the username as its
// argument.
func (v *Verbs) DeletePanelUser(ctx context.Context, cmd protocol.Command) agentsdk.Result {
	return v.panelHook(ctx, cmd, v.cfg.Panel.DeleteHook, false)
}

func (v *Verbs) panelHook(ctx context.Context, cmd protocol.Command, hook string, withPassword bool) agentsdk.Result {
	var a panelUserArgs
	if err := decodeArgs(cmd.Args, &a); err != nil {
		return badArgs(err)
	}
	if !usernameRE.MatchString(a.Username) {
		return badArgs(errors.New("username must be 1..64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"))
	}
	if a.Password != "" && !withPassword {
		return badArgs(errors.New("password is not an argument of delete_panel_user"))
	}
	env := baseEnv(cmd)
	if a.Password != "" {
		env = append(env, "VIWORKS_PANEL_PASSWORD="+a.Password)
	}
	return program{path: hook, args: []string{a.Username}, env: env, dir: "/",
		timeout: v.cfg.RunScript.Timeout.Duration, maxOutput: v.cfg.RunScript.MaxOutputBytes}.run(ctx)
}

// SystemInfo is system_info's output, as JSON.
type SystemInfo struct {
	AgentID      string             `json:"agent_id"`
	AgentVersion string             `json:"agent_version"`
	Hostname     string             `json:"hostname"`
	OS           string             `json:"os"`
	OSRelease    string             `json:"os_release,omitempty"` // PRETTY_NAME of /etc/os-release
	Kernel       string             `json:"kernel,omitempty"`
	Arch         string             `json:"arch"`
	CPUs         int                `json:"cpus"`
	Verbs        []string           `json:"verbs"`
	Metrics      map[string]float64 `json:"metrics,omitempty"` // the current telemetry sample
}

// SystemInfo reports the host: names, versions, CPUs and a telemetry sample.
func (v *Verbs) SystemInfo(_ context.Context, _ protocol.Command) agentsdk.Result {
	host, _ := os.Hostname()
	info := SystemInfo{AgentID: v.cfg.AgentID, AgentVersion: v.version, Hostname: host, OS: runtime.GOOS,
		OSRelease: osRelease("/etc/os-release"), Kernel: kernelRelease(), Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		Verbs: slices.Sorted(slices.Values(v.cfg.Verbs))}
	if v.telemetry != nil {
		info.Metrics = v.telemetry()
	}
	b, err := json.Marshal(info)
	if err != nil {
		return agentsdk.Result{ExitCode: 1, Error: "encoding system info: " + err.Error()}
	}
	return agentsdk.Result{Output: string(b)}
}

func osRelease(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

func kernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return ""
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}
