package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// scenario is one row of the table: the same workload, with a fault injected
// faultAt after the first submission.
type scenario struct {
	name  string
	what  string
	fault func(ctx context.Context, s *system, r *result, logf func(string, ...any))
	// noFailures: every execution must succeed (steady, rolling restart);
	// otherwise a final state is enough.
	noFailures bool
}

func scenarios() []scenario {
	return []scenario{
		{name: "steady", what: "the workload with no fault", noFailures: true},
		{name: "gateway kill -9", what: "SIGKILL one gateway mid-run; its agents reconnect through nginx within 15s", fault: killGateway},
		{name: "scheduler kill -9", what: "SIGKILL the leading scheduler mid-run; the other takes the lease", fault: killScheduler},
		{name: "redis restart", what: "Redis killed and restarted empty mid-run; presence heals", fault: restartRedis},
		{name: "postgres restart", what: "Postgres stopped mid-run; the API answers 503 problem+json, then everything completes", fault: restartPostgres},
		{name: "rolling gateway restart", what: "SIGTERM each gateway in turn, replace it once it exits; zero failed executions", fault: rollingRestart, noFailures: true},
	}
}

// result is what a scenario measured.
type result struct {
	name                                        string
	executions, completed, lost, duplicates     int
	failed                                      int
	maxReconnect                                time.Duration // -1: not applicable
	notes, problems                             []string
	mu                                          sync.Mutex
	statuses                                    map[int]int // POST answers other than 202
	submitProblems                              []string
	accepted                                    []accepted
	notAccepted                                 int
	postTimeouts, postStackTraces, postNotProbl int
}

type accepted struct {
	id      string
	targets int
	verb    string
	token   string
}

func (r *result) ok() bool {
	return r.lost == 0 && r.duplicates == 0 && len(r.problems) == 0
}

func (r *result) verdict() string {
	if r.ok() {
		return "PASS"
	}
	return "FAIL"
}

func (r *result) problemf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problems = append(r.problems, fmt.Sprintf(format, a...))
}

func (r *result) notef(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, a...))
}

func (s *system) runScenario(ctx context.Context, idx int, name string, sc scenario, logf func(string, ...any)) *result {
	r := &result{name: name, maxReconnect: -1, statuses: map[int]int{}}
	commands := s.o.executions / s.o.perCommand
	r.executions = commands * s.o.perCommand
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.submit(ctx, idx, commands, r)
	}()
	if sc.fault != nil {
		select {
		case <-ctx.Done():
		case <-time.After(s.o.faultAt):
			var inFlight int
			_ = s.db.QueryRow(ctx, `SELECT count(*) FROM executions WHERE command_id = ANY($1) AND status IN ('dispatched', 'running')`, r.ids()).Scan(&inFlight)
			r.notef("fault at %s: %d executions dispatched or running", s.o.faultAt, inFlight)
			sc.fault(ctx, s, r, logf)
		}
	}
	wg.Wait()
	logf("  %d of %d commands accepted in %.1fs; waiting for every execution to finish", len(r.accepted), commands, time.Since(start).Seconds())
	s.waitFinished(ctx, r, logf)
	s.check(ctx, r, sc.noFailures)
	for _, e := range s.exited() {
		r.problemf("%s", e)
	}
	for k, v := range r.statuses {
		r.notef("POST /api/v1/commands answered %d %d times (retried)", k, v)
		if k == http.StatusInternalServerError {
			r.problemf("POST /api/v1/commands answered 500 %d times: a server error, where an outage should be 503", v)
		}
	}
	if r.postTimeouts > 0 {
		r.problemf("%d POSTs got no answer within the client timeout (the API hung)", r.postTimeouts)
	}
	if r.postStackTraces > 0 {
		r.problemf("%d API answers contained a stack trace", r.postStackTraces)
	}
	if r.postNotProbl > 0 {
		r.problemf("%d API error answers were not application/problem+json", r.postNotProbl)
	}
	r.problems = append(r.problems, r.submitProblems...)
	if r.notAccepted > 0 {
		r.problemf("%d commands were never accepted", r.notAccepted)
	}
	r.notef("took %s", time.Since(start).Round(time.Second))
	// The next scenario starts from a whole fleet.
	if err := s.waitSessions(ctx, s.o.agents, 90*time.Second); err != nil {
		r.problemf("after the scenario: %v", err)
	}
	return r
}

// commandBody is command i of scenario idx: half echo a per-command token (so
// a result landing on the wrong execution is visible), half sleep, so kills
// happen while executions run. Targets walk the fleet so every agent gets work.
func (s *system) commandBody(idx, i int) (map[string]any, accepted) {
	n := len(s.agentIDs)
	first := (idx*7919 + i*s.o.perCommand) % n
	targets := make([]string, s.o.perCommand)
	for k := range targets {
		targets[k] = s.agentIDs[(first+k)%n]
	}
	token := fmt.Sprintf("s%d-c%d-%s", idx+1, i, randomHex(4))
	body := map[string]any{"agent_targets": targets, "timeout_seconds": 60, "max_retries": 8, "ttl_seconds": 900}
	a := accepted{targets: len(targets), token: token}
	if i%2 == 0 {
		body["verb"], body["args"] = "echo", map[string]any{"message": token}
		a.verb = "echo"
	} else {
		body["verb"], body["args"] = "sleep", map[string]any{"seconds": s.o.sleepSeconds, "token": token}
		a.verb = "sleep"
	}
	return body, a
}

// submit posts the scenario's commands through nginx, evenly over the window,
// retrying each until it is accepted (503 while Postgres is down, say).
func (s *system) submit(ctx context.Context, idx, commands int, r *result) {
	type job struct {
		i    int
		body map[string]any
		a    accepted
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				id, ok := s.postUntilAccepted(ctx, j.body, r)
				r.mu.Lock()
				if ok {
					j.a.id = id
					r.accepted = append(r.accepted, j.a)
				} else {
					r.notAccepted++
				}
				r.mu.Unlock()
			}
		}()
	}
	begin := time.Now()
	for i := range commands {
		at := begin.Add(time.Duration(int64(s.o.window) * int64(i) / int64(commands)))
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		body, a := s.commandBody(idx, i)
		jobs <- job{i, body, a}
	}
	close(jobs)
	wg.Wait()
}

// postUntilAccepted retries a POST for up to two minutes while the answer is
// a server-side refusal; a client mistake is a problem of the harness.
func (s *system) postUntilAccepted(ctx context.Context, body map[string]any, r *result) (string, bool) {
	raw, _ := json.Marshal(body)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		code, ctype, resp, err := s.call(ctx, http.MethodPost, "/api/v1/commands", raw, 10*time.Second)
		switch {
		case err != nil:
			r.mu.Lock()
			if isTimeout(err) {
				r.postTimeouts++
			}
			r.mu.Unlock()
		case code == http.StatusAccepted:
			var v struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(resp, &v) == nil && v.ID != "" {
				return v.ID, true
			}
			r.mu.Lock()
			r.submitProblems = append(r.submitProblems, "202 without a command id: "+string(resp))
			r.mu.Unlock()
			return "", false
		default:
			r.mu.Lock()
			r.statuses[code]++
			if looksLikeStackTrace(resp) {
				r.postStackTraces++
			}
			if !strings.HasPrefix(ctype, "application/problem+json") {
				r.postNotProbl++
			}
			if code < 500 && code != http.StatusTooManyRequests {
				r.submitProblems = append(r.submitProblems, fmt.Sprintf("POST refused with %d: %s", code, resp))
				r.mu.Unlock()
				return "", false
			}
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	return "", false
}

// call does one API request through nginx with a client timeout.
func (s *system) call(ctx context.Context, method, path string, body []byte, timeout time.Duration) (int, string, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, "", nil, err
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), raw, nil
}

func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout")
}

func looksLikeStackTrace(b []byte) bool {
	s := string(b)
	return strings.Contains(s, "goroutine ") || strings.Contains(s, ".go:") || strings.Contains(s, "panic")
}

func (r *result) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, len(r.accepted))
	for i, a := range r.accepted {
		ids[i] = a.id
	}
	return ids
}

var finalStatuses = []string{"succeeded", "failed", "timed_out", "cancelled", "expired"}

// waitFinished polls the database until every execution of the accepted
// commands is final, or the settle time is over.
func (s *system) waitFinished(ctx context.Context, r *result, logf func(string, ...any)) {
	ids := r.ids()
	deadline := time.Now().Add(s.o.settle)
	lastLog := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var final, total int
		err := s.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = ANY($2)), count(*) FROM executions WHERE command_id = ANY($1)`,
			ids, finalStatuses).Scan(&final, &total)
		if err == nil && final == total {
			return
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			if err != nil {
				logf("  waiting: database: %v", err)
			} else {
				logf("  waiting: %d of %d executions final", final, total)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// check counts, from the database, what became of every accepted command.
func (s *system) check(ctx context.Context, r *result, noFailures bool) {
	ids := r.ids()
	byID := map[string]accepted{}
	expected := 0
	for _, a := range r.accepted {
		byID[a.id] = a
		expected += a.targets
	}
	rows, err := s.db.Query(ctx, `
		SELECT e.id, e.command_id, e.agent_id, e.status, e.output, e.attempts,
		       (SELECT count(*) FROM systest_final_writes w WHERE w.execution_id = e.id)
		FROM executions e WHERE e.command_id = ANY($1)`, ids)
	if err != nil {
		r.problemf("reading executions: %v", err)
		r.lost = r.executions
		return
	}
	defer rows.Close()
	pairs := map[string]int{}
	found, pending, retried := 0, map[string]int{}, 0
	var wrongOutput, rewritten int
	var examples []string
	for rows.Next() {
		var id, cmdID, agentID, status, output string
		var attempts, writes int
		if err := rows.Scan(&id, &cmdID, &agentID, &status, &output, &attempts, &writes); err != nil {
			r.problemf("reading executions: %v", err)
			return
		}
		found++
		pairs[cmdID+"/"+agentID]++
		if attempts > 1 {
			retried++
		}
		final := false
		for _, f := range finalStatuses {
			final = final || status == f
		}
		if !final {
			pending[status]++
			if len(examples) < 3 {
				examples = append(examples, fmt.Sprintf("execution %s (agent %s) still %s", id, agentID, status))
			}
			continue
		}
		r.completed++
		if status != "succeeded" {
			r.failed++
			if len(examples) < 6 {
				examples = append(examples, fmt.Sprintf("execution %s (agent %s) ended %s", id, agentID, status))
			}
		}
		if writes != 1 {
			rewritten++
			if len(examples) < 6 {
				examples = append(examples, fmt.Sprintf("execution %s had %d final writes (want exactly 1)", id, writes))
			}
		}
		a := byID[cmdID]
		if status == "succeeded" && a.verb == "echo" && output != a.token {
			wrongOutput++
			if len(examples) < 6 {
				examples = append(examples, fmt.Sprintf("execution %s: output %q, want its command's token %q", id, output, a.token))
			}
		}
	}
	if err := rows.Err(); err != nil {
		r.problemf("reading executions: %v", err)
	}
	extraRows := 0
	for _, n := range pairs {
		if n > 1 {
			extraRows += n - 1
		}
	}
	missing := max(0, expected-(found-extraRows))
	r.executions = expected
	r.lost = missing + sumValues(pending)
	r.duplicates = extraRows + rewritten + wrongOutput
	if missing > 0 {
		r.problemf("%d executions of accepted commands are missing from the database", missing)
	}
	if len(pending) > 0 {
		r.problemf("executions not final after %s: %v", s.o.settle, pending)
	}
	if extraRows > 0 {
		r.problemf("%d extra execution rows for one (command, agent)", extraRows)
	}
	if rewritten > 0 {
		r.problemf("%d executions whose final result was not written exactly once", rewritten)
	}
	if wrongOutput > 0 {
		r.problemf("%d echo executions with another command's output", wrongOutput)
	}
	if noFailures && r.failed > 0 {
		r.problemf("%d executions did not succeed", r.failed)
	}
	if retried > 0 {
		r.notef("%d executions needed more than one attempt", retried)
	}
	if r.failed > 0 && !noFailures {
		r.notef("%d executions ended in a final state other than succeeded", r.failed)
	}
	sort.Strings(examples)
	for _, e := range examples {
		r.notef("e.g. %s", e)
	}
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
