package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxReconnect is the bound of issue 7 on an agent's way back after its
// gateway died.
const maxReconnect = 15 * time.Second

// agentsOn lists the agents whose current session is on gateway id.
func (s *system) agentsOn(ctx context.Context, gatewayID string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT id FROM agents WHERE gateway_id = $1 AND status = 'online' AND id LIKE $2`, gatewayID, agentPrefix+"%")
	if err != nil {
		return nil, fmt.Errorf("listing agents of %s: %w", gatewayID, err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// measureReconnect waits until every agent in ids holds a session opened
// after t0 on a gateway other than gone, and returns the latest such
// connected_at minus t0 (the gateways record connected_at at HELLO).
func (s *system) measureReconnect(ctx context.Context, ids []string, gone string, t0 time.Time, timeout time.Duration) (time.Duration, int, error) {
	deadline := time.Now().Add(timeout)
	var n int
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var last *time.Time
		err := s.db.QueryRow(ctx, `SELECT count(*), max(connected_at) FROM agents
			WHERE id = ANY($1) AND gateway_id <> $2 AND status = 'online' AND connected_at >= $3`, ids, gone, t0).Scan(&n, &last)
		if err == nil && n == len(ids) {
			if last == nil {
				return 0, n, nil
			}
			return last.Sub(t0), n, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return 0, n, fmt.Errorf("%d of %d agents reconnected within %s", n, len(ids), timeout)
}

func killGateway(ctx context.Context, s *system, r *result, logf func(string, ...any)) {
	g := s.gws[0]
	ids, err := s.agentsOn(ctx, g.id)
	if err != nil {
		r.problemf("%v", err)
		return
	}
	t0 := time.Now()
	_ = g.proc.Cmd.Process.Signal(syscall.SIGKILL)
	<-g.proc.Done
	logf("  killed %s (-9), which held %d agents", g.id, len(ids))
	rec, n, err := s.measureReconnect(ctx, ids, g.id, t0, 60*time.Second)
	if err != nil {
		r.problemf("%v", err)
	} else {
		r.maxReconnect = rec
		logf("  all %d agents reconnected through nginx; the last after %.1fs", n, rec.Seconds())
		if rec > maxReconnect {
			r.problemf("the last agent reconnected after %.1fs (bound %s)", rec.Seconds(), maxReconnect)
		}
	}
	r.notef("%s killed with %d agents; they reconnected to %v", g.id, len(ids), s.sessionsPerGateway(ctx))
	// The pod is replaced (a new name on the same Service port).
	if err := s.startSlot(g); err != nil {
		r.problemf("replacing %s: %v", g.id, err)
		return
	}
	if err := s.waitSlot(g); err != nil {
		r.problemf("replacing the gateway: %v", err)
	}
}

func killScheduler(ctx context.Context, s *system, r *result, logf func(string, ...any)) {
	leader := -1
	for i, sl := range s.scheds {
		if v, err := metric(sl.port, "viworks_scheduler_leader"); err == nil && v == 1 {
			leader = i
		}
	}
	if leader < 0 {
		r.problemf("no scheduler reports holding the maintenance lease (viworks_scheduler_leader)")
		leader = 0
	}
	dead, other := s.scheds[leader], s.scheds[1-leader]
	t0 := time.Now()
	_ = dead.proc.Cmd.Process.Signal(syscall.SIGKILL)
	<-dead.proc.Done
	logf("  killed %s (-9), the leader", dead.id)
	handed := false
	for time.Since(t0) < 30*time.Second && ctx.Err() == nil {
		if v, err := metric(other.port, "viworks_scheduler_leader"); err == nil && v == 1 {
			handed = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if handed {
		logf("  %s took the maintenance lease after %.1fs", other.id, time.Since(t0).Seconds())
		r.notef("leader %s killed; %s took the lease after %.1fs", dead.id, other.id, time.Since(t0).Seconds())
	} else {
		r.problemf("%s did not take the maintenance lease within 30s of the leader's death", other.id)
	}
	// Run alone for a while before the replacement comes.
	time.Sleep(5 * time.Second)
	if err := s.startSlot(dead); err != nil {
		r.problemf("replacing the scheduler: %v", err)
		return
	}
	if err := s.waitSlot(dead); err != nil {
		r.problemf("replacing the scheduler: %v", err)
	}
}

// presenceCount counts the agents' presence keys in Redis.
func (s *system) presenceCount(ctx context.Context) (int, error) {
	n := 0
	iter := s.rdb.Scan(ctx, 0, redisPrefix+"presence:*", 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n, iter.Err()
}

func restartRedis(ctx context.Context, s *system, r *result, logf func(string, ...any)) {
	before, _ := s.presenceCount(ctx)
	s.rds.kill()
	t0 := time.Now()
	logf("  killed redis (%d presence keys lost)", before)
	time.Sleep(time.Second)
	if err := s.rds.start(ctx); err != nil {
		r.problemf("restarting redis: %v", err)
		return
	}
	logf("  redis restarted empty after %.1fs", time.Since(t0).Seconds())
	var n int
	for time.Since(t0) < 90*time.Second && ctx.Err() == nil {
		n, _ = s.presenceCount(ctx)
		if n >= s.o.agents {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n >= s.o.agents {
		logf("  presence healed: %d keys %.1fs after the kill", n, time.Since(t0).Seconds())
		r.notef("presence healed (%d of %d keys) %.1fs after redis was killed", n, before, time.Since(t0).Seconds())
	} else {
		r.problemf("presence did not heal: %d of %d keys 90s after the restart", n, s.o.agents)
	}
}

// probe tallies the API's answers during the Postgres outage.
type probe struct {
	mu        sync.Mutex
	codes     map[int]int
	timeouts  int
	errs      int
	notProbl  int
	traces    int
	slowest   time.Duration
	bodies500 []string
}

func (p *probe) record(code int, ctype string, body []byte, d time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slowest = max(p.slowest, d)
	switch {
	case err != nil && isTimeout(err):
		p.timeouts++
	case err != nil:
		p.errs++
	default:
		p.codes[code]++
		if code >= 400 && !strings.HasPrefix(ctype, "application/problem+json") {
			p.notProbl++
		}
		if looksLikeStackTrace(body) {
			p.traces++
		}
		if code == http.StatusInternalServerError && len(p.bodies500) < 2 {
			p.bodies500 = append(p.bodies500, string(body))
		}
	}
}

func restartPostgres(ctx context.Context, s *system, r *result, logf func(string, ...any)) {
	ids := r.ids()
	if len(ids) == 0 {
		r.problemf("no command accepted before the outage")
		return
	}
	known := ids[0]
	p := &probe{codes: map[int]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		body := fmt.Appendf(nil, `{"verb":"echo","args":{"message":"probe"},"agent_targets":[%q]}`, s.agentIDs[0])
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			start := time.Now()
			var code int
			var ctype string
			var resp []byte
			var err error
			switch i % 3 {
			case 0:
				code, ctype, resp, err = s.call(ctx, http.MethodGet, "/api/v1/commands/"+known, nil, 5*time.Second)
			case 1:
				code, ctype, resp, err = s.call(ctx, http.MethodGet, "/api/v1/agents?limit=5", nil, 5*time.Second)
			default:
				code, ctype, resp, err = s.call(ctx, http.MethodPost, "/api/v1/commands", body, 5*time.Second)
				if code == http.StatusAccepted {
					// Accepted, so it must complete like the workload's.
					var v struct {
						ID string `json:"id"`
					}
					if json.Unmarshal(resp, &v) == nil && v.ID != "" {
						r.mu.Lock()
						r.accepted = append(r.accepted, accepted{id: v.ID, targets: 1, verb: "echo", token: "probe"})
						r.mu.Unlock()
					}
					continue
				}
			}
			if code == http.StatusOK {
				continue
			}
			p.record(code, ctype, resp, time.Since(start), err)
		}
	}()
	t0 := time.Now()
	if err := s.pg.stop(); err != nil {
		r.problemf("%v", err)
	}
	logf("  postgres stopped (fast shutdown: sessions cut)")
	time.Sleep(s.o.outage)
	if err := s.pg.start(); err != nil {
		r.problemf("restarting postgres: %v", err)
	}
	logf("  postgres back after %.1fs", time.Since(t0).Seconds())
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	r.notef("API answers through nginx while postgres was down (%s): %v; %d client timeouts (5s), %d connection errors, slowest %s",
		s.o.outage, p.codes, p.timeouts, p.errs, p.slowest.Round(time.Millisecond))
	if p.codes[http.StatusServiceUnavailable] == 0 {
		r.problemf("the API never answered 503 while postgres was down (answers: %v)", p.codes)
	}
	if p.codes[http.StatusInternalServerError] > 0 {
		r.problemf("the API answered 500 instead of 503 %d times while postgres was down, e.g. %s", p.codes[http.StatusInternalServerError], strings.Join(p.bodies500, " | "))
	}
	if p.timeouts > 0 {
		r.problemf("%d API requests hung past the 5s client timeout", p.timeouts)
	}
	if p.notProbl > 0 {
		r.problemf("%d error answers were not application/problem+json", p.notProbl)
	}
	if p.traces > 0 {
		r.problemf("%d answers contained a stack trace", p.traces)
	}
}

func rollingRestart(ctx context.Context, s *system, r *result, logf func(string, ...any)) {
	var worst time.Duration
	for _, g := range s.gws {
		ids, err := s.agentsOn(ctx, g.id)
		if err != nil {
			r.problemf("%v", err)
			return
		}
		old := g.id
		t0 := time.Now()
		graceful := g.proc.Stop(60 * time.Second)
		code := g.proc.Cmd.ProcessState.ExitCode()
		logf("  %s stopped (SIGTERM, %d agents) in %.1fs, exit code %d", old, len(ids), time.Since(t0).Seconds(), code)
		if !graceful {
			r.problemf("%s did not exit within 60s of SIGTERM (killed)", old)
		} else if code != 0 {
			r.problemf("%s exited with code %d after SIGTERM", old, code)
		}
		if err := s.startSlot(g); err != nil {
			r.problemf("replacing %s: %v", old, err)
			return
		}
		if err := s.waitSlot(g); err != nil {
			r.problemf("replacing %s: %v", old, err)
			return
		}
		rec, n, err := s.measureReconnect(ctx, ids, old, t0, 60*time.Second)
		if err != nil {
			r.problemf("after stopping %s: %v", old, err)
		} else {
			worst = max(worst, rec)
			logf("  %d agents of %s reconnected; the last %.1fs after SIGTERM (drain window %ds)", n, old, rec.Seconds(), drainSec)
		}
		if err := s.waitSessions(ctx, s.o.agents, 60*time.Second); err != nil {
			r.problemf("after replacing %s: %v", old, err)
		}
	}
	r.maxReconnect = worst
	r.notef("each gateway drained and was replaced in turn; sessions now %v", s.sessionsPerGateway(ctx))
}
