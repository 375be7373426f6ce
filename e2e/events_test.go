package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sseEvent is one event read from GET /api/v1/events.
type sseEvent struct {
	Name string
	Data struct {
		Type        string `json:"type"`
		AgentID     string `json:"agent_id"`
		CommandID   string `json:"command_id"`
		ExecutionID string `json:"execution_id"`
		Status      string `json:"status"`
	}
}

// eventStream reads an SSE stream in the background; events arrive on C, and
// C is closed when the server ends the stream.
type eventStream struct {
	C      chan sseEvent
	cancel context.CancelFunc
}

func openEvents(t *testing.T, a api, query string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/api/v1/events"+query, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	rd := bufio.NewReader(resp.Body)
	// The server writes a comment at once: the subscription is live after it.
	for {
		line, err := rd.ReadString('\n')
		require.NoError(t, err)
		if strings.HasPrefix(line, ": connected") {
			break
		}
	}
	s := &eventStream{C: make(chan sseEvent, 1024), cancel: cancel}
	go func() {
		defer close(s.C)
		defer resp.Body.Close()
		var ev sseEvent
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.Name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Data) != nil {
					return
				}
			case line == "" && ev.Name != "":
				s.C <- ev
				ev = sseEvent{}
			}
		}
	}()
	t.Cleanup(cancel)
	return s
}

// waitFor reads events until match has accepted everything it wants.
func (s *eventStream) waitFor(t *testing.T, timeout time.Duration, what string, done func(sseEvent) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-s.C:
			require.True(t, ok, "stream ended while waiting for %s", what)
			if done(ev) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, timeout)
		}
	}
}

// TestEventsAcrossReplicas runs two api-server replicas on one Redis: a
// client of one replica sees the agents and the command created through the
// other, filters apply, and SIGTERM ends the stream cleanly.
func TestEventsAcrossReplicas(t *testing.T) {
	c := newCluster(t)
	out, err := c.run("scheduler", "migrate")
	require.NoError(t, err, out)
	schedPort, gwPort := freePort(t), freePort(t)
	sched := c.start("scheduler", "scheduler", nil, "--port", strconv.Itoa(schedPort))
	gw := c.start("gateway", "agent-gateway", []string{"VIWORKS_INSTANCE_ID=gw-ev"}, "--port", strconv.Itoa(gwPort))
	var apis []api
	var apiProcs []*proc
	for i := 1; i <= 2; i++ {
		port := freePort(t)
		p := c.start(fmt.Sprintf("api-%d", i), "api-server", nil, "--port", strconv.Itoa(port))
		waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), p)
		apis = append(apis, api{base: fmt.Sprintf("http://127.0.0.1:%d", port)})
		apiProcs = append(apiProcs, p)
	}
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", schedPort), sched)
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", gwPort), gw)
	viewer, err := c.run("api-server", "token", "--subject", "watcher", "--role", "viewer", "--ttl", "1h")
	require.NoError(t, err)
	operator, err := c.run("api-server", "token", "--subject", "e2e-operator", "--role", "operator", "--ttl", "1h")
	require.NoError(t, err)
	watch := api{base: apis[1].base, token: strings.TrimSpace(viewer)}
	act := api{base: apis[0].base, token: strings.TrimSpace(operator)}

	all := openEvents(t, watch, "")
	onlyOne := openEvents(t, watch, "?type=agent.online&agent=ev-1")

	c.start("agentsim", "agentsim", nil, "--gateway", fmt.Sprintf("ws://127.0.0.1:%d/ws/agent", gwPort),
		"--agents", "2", "--prefix", "ev-", "--enrollment-secret", c.getenv("AGENT_ENROLLMENT_SECRET"))
	online := map[string]bool{}
	all.waitFor(t, 30*time.Second, "agent.online for ev-0 and ev-1", func(ev sseEvent) bool {
		if ev.Name == "agent.online" {
			online[ev.Data.AgentID] = true
		}
		return online["ev-0"] && online["ev-1"]
	})
	onlyOne.waitFor(t, 5*time.Second, "the filtered agent.online", func(ev sseEvent) bool {
		require.Equal(t, "agent.online", ev.Name)
		require.Equal(t, "ev-1", ev.Data.AgentID, "the filter lets only ev-1 through")
		return true
	})

	var cmd commandView
	require.Equal(t, http.StatusAccepted, act.do(t, http.MethodPost, "/api/v1/commands",
		map[string]any{"verb": "echo", "args": map[string]string{"message": "hi"}, "agent_targets": []string{"ev-0", "ev-1"}}, &cmd))
	seen := map[string]bool{}
	all.waitFor(t, 30*time.Second, "the command's life as events", func(ev sseEvent) bool {
		switch ev.Name {
		case "command.status":
			if ev.Data.CommandID == cmd.ID {
				seen["command "+ev.Data.Status] = true
				if ev.Data.Status == "succeeded" {
					require.True(t, seen["ev-0 succeeded"] && seen["ev-1 succeeded"],
						"the command's success arrives after its executions' (causal order): %v", seen)
				}
			}
		case "execution.status":
			// running too (an ack in the same write as its result has no running event)
			require.Equal(t, cmd.ID, ev.Data.CommandID, "every execution event names its command (%s %s)", ev.Data.AgentID, ev.Data.Status)
			seen[ev.Data.AgentID+" "+ev.Data.Status] = true
		}
		return seen["command queued"] && seen["command succeeded"] &&
			seen["ev-0 dispatched"] && seen["ev-1 dispatched"] && seen["ev-0 succeeded"] && seen["ev-1 succeeded"]
	})

	// Bad filters are the client's mistake.
	var p problem
	require.Equal(t, http.StatusBadRequest, watch.do(t, http.MethodGet, "/api/v1/events?type=nope", nil, &p))
	require.Equal(t, "type", p.Errors[0].Field)

	// Shutdown ends the stream promptly instead of holding the server open.
	start := time.Now()
	require.True(t, apiProcs[1].Stop(20*time.Second), "api-server exits on SIGTERM")
	for range all.C {
	}
	require.Less(t, time.Since(start), 15*time.Second)
}
