package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/viworks/backend-agent/viworksctl/client"
)

// How often a followed command is read again: while the event stream is up
// (events are at most once, so one may be lost) and after it dropped.
var (
	safetyInterval = 5 * time.Second
	pollInterval   = 500 * time.Millisecond
	coalesce       = 200 * time.Millisecond
)

type execView struct {
	ID       string `json:"id"`
	AgentID  string `json:"agent_id"`
	Status   string `json:"status"`
	ExitCode *int   `json:"exit_code"`
	Output   string `json:"output"`
	Error    string `json:"error"`
}

type commandView struct {
	ID         string         `json:"id"`
	Status     string         `json:"status"`
	Counts     map[string]int `json:"counts"`
	Executions []execView     `json:"executions"`
}

func finalCommand(s string) bool { return s != "queued" && s != "running" && s != "" }

func finalExecution(s string) bool {
	switch s {
	case "succeeded", "failed", "timed_out", "cancelled", "expired":
		return true
	}
	return false
}

// follower tracks one command's executions and draws its progress.
type follower struct {
	a       *app
	id      string
	status  map[string]string // execution id → status
	agent   map[string]string // execution id → agent id
	printed map[string]bool
	tty     bool
	last    string
}

// follow watches command id on the event stream, falling back to polling,
// prints each target's outcome and the summary, and returns an error with
// exit code 1 unless the command succeeded.
func (a *app) follow(ctx context.Context, c *client.Client, id string) error {
	f := &follower{a: a, id: id, status: map[string]string{}, agent: map[string]string{}, printed: map[string]bool{}, tty: a.stderrTTY()}
	events := make(chan client.Event, 64)
	dropped := make(chan error, 1)
	streamCtx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	stream, err := c.Events(streamCtx, url.Values{"command": {id}, "type": {"execution.status,command.status"}})
	if err != nil {
		var ae *client.APIError
		if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden) {
			return err
		}
		f.note("event stream unavailable (%v); polling every %s", err, pollInterval)
		dropped <- nil
	} else {
		go func() {
			defer func() { _ = stream.Close() }()
			for {
				e, err := stream.Next()
				if err != nil {
					dropped <- err
					return
				}
				select {
				case events <- e:
				case <-streamCtx.Done():
					return
				}
			}
		}()
	}

	// Read once after subscribing: what happened before the stream was up.
	doc, raw, err := f.read(ctx, c)
	if err != nil {
		return err
	}
	polling := false
	next := func() time.Duration {
		if polling {
			return pollInterval
		}
		return safetyInterval
	}
	timer := time.NewTimer(next())
	defer timer.Stop()
	dirty := false
	for !finalCommand(doc.Status) {
		select {
		case <-ctx.Done():
			f.clear()
			return withCode(ExitFailed, fmt.Errorf("stopped following command %s (it goes on; viworksctl commands watch %s)", id, id))
		case e := <-events:
			if e.Type == "execution.status" && e.ExecutionID != "" {
				f.set(e.ExecutionID, e.AgentID, e.Status)
			}
			f.progress()
			switch {
			case e.Type == "command.status" && finalCommand(e.Status):
				dirty = true
				resetTimer(timer, 0)
			case !dirty:
				dirty = true
				resetTimer(timer, coalesce)
			}
			continue
		case err := <-dropped:
			if err != nil {
				f.note("event stream dropped (%v); polling every %s", err, pollInterval)
			}
			polling = true
			resetTimer(timer, 0)
			continue
		case <-timer.C:
		}
		if doc, raw, err = f.read(ctx, c); err != nil {
			return err
		}
		dirty = false
		timer.Reset(next())
	}
	f.clear()
	return f.finish(doc, raw)
}

func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(d)
}

// read gets the command, merges its executions and prints the outcome of
// those that ended.
func (f *follower) read(ctx context.Context, c *client.Client) (commandView, []byte, error) {
	resp, err := c.Do(ctx, client.Request{Method: http.MethodGet, Path: "/api/v1/commands/" + pathID(f.id)})
	if err != nil {
		return commandView{}, nil, err
	}
	var doc commandView
	if err := json.Unmarshal(resp.Body, &doc); err != nil {
		return commandView{}, nil, fmt.Errorf("decoding command %s: %w", f.id, err)
	}
	for _, e := range doc.Executions {
		f.set(e.ID, e.AgentID, e.Status)
		if finalExecution(e.Status) && !f.printed[e.ID] {
			f.printed[e.ID] = true
			f.outcome(e)
		}
	}
	f.progress()
	return doc, resp.Body, nil
}

// set records an execution's status; a final status is never replaced by
// an older, unfinished one.
func (f *follower) set(id, agent, status string) {
	if finalExecution(f.status[id]) && !finalExecution(status) {
		return
	}
	f.status[id] = status
	if agent != "" {
		f.agent[id] = agent
	}
}

func (f *follower) counts() (done, failed, running int) {
	for _, s := range f.status {
		switch {
		case s == "succeeded":
			done++
		case finalExecution(s):
			failed++
		default:
			running++
		}
	}
	return done, failed, running
}

// progress draws the progress line on standard error: redrawn in place on
// a terminal, a new line on each change otherwise.
func (f *follower) progress() {
	done, failed, running := f.counts()
	total := done + failed + running
	if total == 0 {
		return
	}
	const width = 20
	filled := (done + failed) * width / total
	line := fmt.Sprintf("[%s%s] %d/%d  done %d  failed %d  running %d",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), done+failed, total, done, failed, running)
	if line == f.last {
		return
	}
	f.last = line
	if f.tty {
		fmt.Fprintf(f.a.io.Err, "\r\x1b[K%s", line)
	} else {
		fmt.Fprintln(f.a.io.Err, line)
	}
}

func (f *follower) clear() {
	if f.tty && f.last != "" {
		fmt.Fprint(f.a.io.Err, "\r\x1b[K")
		f.last = ""
	}
}

func (f *follower) note(format string, args ...any) {
	f.clear()
	fmt.Fprintf(f.a.io.Err, "viworksctl: "+format+"\n", args...)
}

// outcome prints one target's result (table format only: json and yaml
// print the final document).
func (f *follower) outcome(e execView) {
	p := f.a.printer()
	if p.Structured() {
		return
	}
	f.clear()
	line := fmt.Sprintf("%s  %s", e.AgentID, p.Status(e.Status))
	if e.ExitCode != nil {
		line += fmt.Sprintf("  exit %d", *e.ExitCode)
	}
	if e.Output != "" {
		line += "  " + oneLine(e.Output)
	}
	if e.Error != "" {
		line += "  error: " + oneLine(e.Error)
	}
	fmt.Fprintln(p.W, line)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// finish prints the final document (json, yaml) or the summary, and is an
// error unless the command succeeded.
func (f *follower) finish(doc commandView, raw []byte) error {
	p := f.a.printer()
	if p.Structured() {
		if err := p.Document(raw); err != nil {
			return err
		}
	} else {
		done, failed, _ := f.counts()
		fmt.Fprintf(p.W, "command %s %s: %d of %d targets succeeded, %d failed\n", doc.ID, p.Status(doc.Status), done, len(doc.Executions), failed)
	}
	if doc.Status != "succeeded" {
		var bad []string
		for _, e := range doc.Executions {
			if e.Status != "succeeded" {
				bad = append(bad, e.AgentID+" "+e.Status)
			}
		}
		return withCode(ExitFailed, fmt.Errorf("command %s %s (%s)", doc.ID, doc.Status, strings.Join(bad, ", ")))
	}
	return nil
}
