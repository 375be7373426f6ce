// Package cluster runs the product's real binaries as separate processes, the
// way a deployment does, for the end-to-end tests and the benchmarks.
package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Packages maps each binary to its package, relative to the repository root.
var Packages = map[string]string{
	"api-server":    "./api-server",
	"agent-gateway": "./agent-gateway",
	"scheduler":     "./scheduler",
	"agentsim":      "./agentsim",
	"viworks":       "./standalone",
}

// Build compiles every binary from the checkout at root into a new temporary
// directory and returns it.
func Build(root string) (string, error) {
	dir, err := os.MkdirTemp("", "viworks-bin-")
	if err != nil {
		return "", fmt.Errorf("creating binary directory: %w", err)
	}
	for name, pkg := range Packages {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("building %s: %v\n%s", name, err, out)
		}
	}
	return dir, nil
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Cluster is a set of processes sharing an environment (database, Redis prefix, secrets).
type Cluster struct {
	Bin string   // directory of the binaries
	Dir string   // logs and files
	Env []string // environment of every process

	mu    sync.Mutex
	procs []*Proc
}

// Proc is one running process; Done closes when it exits.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	Done chan struct{}
}

// Getenv returns the last value of key in the cluster's environment.
func (c *Cluster) Getenv(key string) string {
	for i := len(c.Env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(c.Env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// Run runs a binary to completion and returns its stdout.
func (c *Cluster) Run(name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.Bin, name), args...)
	cmd.Env = c.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %v: %w: %s", name, args, err, stderr.String())
	}
	return stdout.String(), nil
}

// Start launches a long-running process with extra environment; its output
// goes to DIR/label.log.
func (c *Cluster) Start(label, name string, env []string, args ...string) (*Proc, error) {
	logPath := filepath.Join(c.Dir, label+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.Bin, name), args...)
	cmd.Env = append(append([]string{}, c.Env...), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", label, err)
	}
	p := &Proc{Name: label, Cmd: cmd, Log: logPath, Done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = f.Close(); close(p.Done) }()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// Stop sends SIGTERM and waits up to timeout, then kills.
func (p *Proc) Stop(timeout time.Duration) (graceful bool) {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Done:
		return true
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.Done
		return false
	}
}

// Tail returns the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// StopAll stops every process (SIGTERM, then kill after timeout) and returns
// those that had to be killed.
func (c *Cluster) StopAll(timeout time.Duration) []*Proc {
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	var killed []*Proc
	deadline := time.Now().Add(timeout)
	for _, p := range procs {
		select {
		case <-p.Done:
		case <-time.After(time.Until(deadline)):
			_ = p.Cmd.Process.Kill()
			<-p.Done
			killed = append(killed, p)
		}
	}
	return killed
}

// Procs returns the processes started so far.
func (c *Cluster) Procs() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Proc(nil), c.procs...)
}

// WaitReady polls url until it answers 200, failing early if p exits.
func WaitReady(url string, p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.Done:
			return fmt.Errorf("%s exited before becoming ready:\n%s", p.Name, p.Tail(4000))
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New(p.Name + " not ready at " + url + " within " + timeout.String())
}
