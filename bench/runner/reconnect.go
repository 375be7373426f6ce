package runner

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// stormResult is the reconnect storm: the connections scenario's fleet, all on
// the first gateway, after that gateway is restarted.
type stormResult struct {
	agents   int
	drain    time.Duration // SIGTERM → the old process exited (it closes sessions over drain_seconds)
	startup  time.Duration // the new process started → ready
	online   time.Duration // the new process ready → every agent holds a session again
	reached  int           // sessions when the scenario stopped waiting
	complete bool          // every agent came back
}

// rate is agents reconnected per second after the new gateway was ready.
func (s stormResult) rate() float64 {
	if s.online <= 0 {
		return 0
	}
	return float64(s.reached) / s.online.Seconds()
}

// stormTimeout bounds the wait for the fleet to come back: beyond it the
// scenario reports how many did.
const stormTimeout = 2 * time.Minute

// reconnectStorm restarts the first gateway under the connected fleet:
// SIGTERM, and once the old process is gone a new one on the same port; the
// agents reconnect by themselves, with the SDK's backoff.
func (r *run) reconnectStorm(ctx context.Context, m *measured) error {
	sys := r.sys
	n := r.cfg.ConnAgents
	res := stormResult{agents: n}
	port, err := strconv.Atoi(sys.gateways[0][strings.LastIndexByte(sys.gateways[0], ':')+1:])
	if err != nil {
		return fmt.Errorf("reconnect storm: gateway port: %w", err)
	}
	r.progress("reconnect storm: restarting gateway 1 under %d agents (SIGTERM, then a new process on port %d)", n, port)
	t0 := time.Now()
	old := sys.gatewayProcs[0]
	if !old.Stop(time.Minute) {
		r.progress("reconnect storm: the old gateway did not stop within a minute and was killed")
	}
	res.drain = time.Since(t0)
	t1 := time.Now()
	p, err := sys.startService(r.c, "agent-gateway-1-restarted", "agent-gateway", port)
	if err != nil {
		return fmt.Errorf("reconnect storm: starting the new gateway: %w", err)
	}
	sys.gatewayProcs[0] = p // shared with r.sys: the later scenarios use the new process
	ready := time.Now()
	res.startup = ready.Sub(t1)
	deadline := ready.Add(stormTimeout)
	for {
		v, err := sys.metric("http://"+sys.gateways[0], "viworks_gateway_sessions")
		if err != nil {
			return fmt.Errorf("reconnect storm: %w", err)
		}
		res.reached, res.online = int(v), time.Since(ready)
		if res.reached >= n {
			res.complete = true
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.progress("reconnect storm: old gateway gone after %s, new one ready after %s, %d of %d agents back %s after ready",
		ms(res.drain), ms(res.startup), res.reached, n, ms(res.online))
	m.storm = res
	return nil
}

// stormRows are the reconnect storm's rows of the result table.
func stormRows(s stormResult) []Row {
	if !s.complete {
		return []Row{{"reconnect storm", fmt.Sprintf("only %d of %d agents back after %s", s.reached, s.agents, stormTimeout), "≤ 10 s", "", "",
			fmt.Sprintf("NO: %d of %d reconnected", s.reached, s.agents)}}
	}
	return []Row{
		{"reconnect storm", fmt.Sprintf("%.2f s new gateway ready → all %d agents online", s.online.Seconds(), s.agents), "≤ 10 s", "", "", met(s.online <= 10*time.Second)},
		{"reconnect storm", fmt.Sprintf("%.0f agents/s reconnect", s.rate()), "", "", "", ""},
	}
}
