package verbs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// Exit codes the verbs report besides a program's own.
const (
	// ExitCodeBadArgs: the command's arguments are invalid; nothing ran.
	ExitCodeBadArgs = 2
	// ExitCodeTimeout: the program ran longer than its timeout and its
	// process group was killed.
	ExitCodeTimeout = 124
	// ExitCodeCannotRun: the program could not be started.
	ExitCodeCannotRun = 126
	// ExitCodeDisabled: the verb is not enabled on this agent; nothing ran.
	ExitCodeDisabled = agentsdk.ExitCodeUnknownVerb
)

// stderrHeading separates stderr from stdout in a result's output.
const stderrHeading = "[stderr]\n"

// program is one run of an external program, never through a shell.
type program struct {
	path      string
	args      []string // after argv[0]
	env       []string
	dir       string
	cred      *syscall.Credential // nil: the agent's own user
	timeout   time.Duration
	maxOutput int
}

// run starts p in its own process group and waits for it. When ctx ends
// (CANCEL from the platform, agent shutdown) or the timeout passes, the
// whole group is killed; so are processes the program left behind when it
// exits. stdout and stderr are each kept up to maxOutput bytes, and the
// output (stdout, then stderr after a "[stderr]" line) is cut to maxOutput
// with protocol.TruncationMarker.
func (p program) run(ctx context.Context) agentsdk.Result {
	stdout, stderr := &capped{limit: p.maxOutput}, &capped{limit: p.maxOutput}
	outR, outW, err := os.Pipe()
	if err != nil {
		return agentsdk.Result{ExitCode: ExitCodeCannotRun, Error: fmt.Sprintf("creating a pipe: %v", err)}
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		_, _ = outR.Close(), outW.Close()
		return agentsdk.Result{ExitCode: ExitCodeCannotRun, Error: fmt.Sprintf("creating a pipe: %v", err)}
	}
	cmd := &exec.Cmd{
		Path:   p.path,
		Args:   append([]string{p.path}, p.args...),
		Env:    p.env,
		Dir:    p.dir,
		Stdin:  nil, // /dev/null
		Stdout: outW,
		Stderr: errW,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Credential: p.cred,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	err = cmd.Start()
	_, _ = outW.Close(), errW.Close() // the program holds its own copies
	if err != nil {
		_, _ = outR.Close(), errR.Close()
		return agentsdk.Result{ExitCode: ExitCodeCannotRun, Error: fmt.Sprintf("starting %s: %v", p.path, err)}
	}
	var readers sync.WaitGroup
	for _, r := range []struct {
		f *os.File
		w io.Writer
	}{{outR, stdout}, {errR, stderr}} {
		readers.Go(func() { _, _ = io.Copy(r.w, r.f) })
	}
	pgid := cmd.Process.Pid
	killGroup := func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	timer := time.NewTimer(p.timeout)
	defer timer.Stop()
	var why string
	var code int
	select {
	case err = <-done:
		killGroup() // leftovers of a finished program do not outlive it
	case <-timer.C:
		killGroup()
		err = <-done
		why, code = fmt.Sprintf("timed out after %s; its process group was killed", p.timeout), ExitCodeTimeout
	case <-ctx.Done():
		killGroup()
		err = <-done
		why, code = fmt.Sprintf("cancelled (%v); its process group was killed", context.Cause(ctx)), agentsdk.ExitCodeCancelled
	}
	// The group is gone; a process that left it may still hold the pipes.
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(pipeDrain):
		_, _ = outR.Close(), errR.Close()
		<-drained
	}
	_, _ = outR.Close(), errR.Close()

	res := agentsdk.Result{}
	res.Output, res.OutputTruncated = p.output(stdout, stderr)
	switch {
	case why != "":
		res.ExitCode, res.Error = code, why
	case err == nil:
	default:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			res.ExitCode, res.Error = ExitCodeCannotRun, fmt.Sprintf("running %s: %v", p.path, err)
			return res
		}
		res.ExitCode = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.ExitCode = 128 + int(ws.Signal())
		}
		res.Error = ee.String()
	}
	return res
}

// pipeDrain bounds how long output is read after the process group ended.
const pipeDrain = time.Second

func (p program) output(stdout, stderr *capped) (string, bool) {
	var b strings.Builder
	b.WriteString(stdout.text())
	if stderr.buf.Len() > 0 {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteByte('\n')
		}
		b.WriteString(stderrHeading)
		b.WriteString(stderr.text())
	}
	out, cut := protocol.Truncate(b.String(), p.maxOutput)
	return out, cut || stdout.cut || stderr.cut
}

// capped keeps the first limit bytes written to it and counts the rest, so
// a chatty program never blocks on its pipe nor fills the agent's memory.
type capped struct {
	limit int
	buf   bytes.Buffer
	cut   bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.limit - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	if c.buf.Len()+len(p) > c.limit {
		c.cut = true
	}
	return len(p), nil
}

// text is what was kept, ending with protocol.TruncationMarker when more
// was written.
func (c *capped) text() string {
	if c.cut {
		return c.buf.String() + protocol.TruncationMarker
	}
	return c.buf.String()
}
