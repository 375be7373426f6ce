// Package e2e runs the real binaries as separate processes on real Postgres and
// Redis and drives them from the outside, as operators and agents would.
package e2e

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	_ "github.com/jackc/pgx/v5/stdlib" // raw SQL on the database the services share
	"github.com/stretchr/testify/require"
)

type agentView struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	GatewayID string `json:"gateway_id"`
}

type agentList struct {
	Items      []agentView `json:"items"`
	NextCursor *string     `json:"next_cursor"`
}

type executionView struct {
	AgentID  string `json:"agent_id"`
	Status   string `json:"status"`
	Output   string `json:"output"`
	ExitCode *int   `json:"exit_code"`
	Attempts int    `json:"attempts"`
}

type commandView struct {
	ID         string          `json:"id"`
	Status     string          `json:"status"`
	Counts     map[string]int  `json:"counts"`
	Executions []executionView `json:"executions"`
}

type problem struct {
	Status int `json:"status"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

type system struct {
	api       api
	gateways  []string // ws URLs
	enrollKey string
}

// startSystem runs migrate, one scheduler, one api-server and two gateways.
func startSystem(t *testing.T, c *testCluster) system {
	t.Helper()
	out, err := c.run("scheduler", "migrate")
	require.NoError(t, err)
	require.Contains(t, out, "schema at version")

	schedPort, apiPort := freePort(t), freePort(t)
	sched := c.start("scheduler", "scheduler", nil, "--port", strconv.Itoa(schedPort))
	apiProc := c.start("api-server", "api-server", nil, "--port", strconv.Itoa(apiPort))
	var gws []string
	for i := 1; i <= 2; i++ {
		port := freePort(t)
		gw := c.start(fmt.Sprintf("gateway-%d", i), "agent-gateway", []string{fmt.Sprintf("VIWORKS_INSTANCE_ID=gw-%d", i)}, "--port", strconv.Itoa(port))
		waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), gw)
		gws = append(gws, fmt.Sprintf("ws://127.0.0.1:%d/ws/agent", port))
	}
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", schedPort), sched)
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", apiPort), apiProc)

	tok, err := c.run("api-server", "token", "--subject", "e2e-operator", "--role", "operator", "--ttl", "1h")
	require.NoError(t, err)
	return system{
		api:       api{base: fmt.Sprintf("http://127.0.0.1:%d", apiPort), token: strings.TrimSpace(tok)},
		gateways:  gws,
		enrollKey: c.getenv("AGENT_ENROLLMENT_SECRET"),
	}
}

func (s system) onlineAgents(t *testing.T) []agentView {
	var all []agentView
	cursor := ""
	for {
		var page agentList
		code := s.api.do(t, http.MethodGet, "/api/v1/agents?status=online&limit=100&cursor="+cursor, nil, &page)
		require.Equal(t, http.StatusOK, code)
		all = append(all, page.Items...)
		if page.NextCursor == nil {
			return all
		}
		cursor = *page.NextCursor
	}
}

func (s system) waitOnline(t *testing.T, n int) []agentView {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		agents := s.onlineAgents(t)
		if len(agents) >= n {
			return agents
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d agents online after 60s", len(agents), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s system) waitCommand(t *testing.T, id string, timeout time.Duration, poll time.Duration) commandView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var cmd commandView
		require.Equal(t, http.StatusOK, s.api.do(t, http.MethodGet, "/api/v1/commands/"+id, nil, &cmd))
		switch cmd.Status {
		case "succeeded", "failed", "partially_succeeded", "cancelled", "timed_out", "expired":
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s still %s after %s: %+v", id, cmd.Status, timeout, cmd.Counts)
		}
		time.Sleep(poll)
	}
}

func TestCommandEndToEndAcrossTwoGateways(t *testing.T) {
	c := newCluster(t)
	sys := startSystem(t, c)

	// 50 simulated agents, 25 on each gateway, in two agentsim processes,
	// enrolled with a secret that fixes their site and labels (what they
	// claim in HELLO is only reported).
	secret := issueEnrollmentSecret(t, sys.admin(t, c), map[string]any{"name": "e2e fleet", "site": "e2e", "labels": map[string]string{"role": "sim"}})
	for i, gw := range sys.gateways {
		c.start(fmt.Sprintf("agentsim-%d", i), "agentsim", nil,
			"--gateway", gw, "--agents", "25", "--prefix", fmt.Sprintf("e2e-%d-", i), "--enrollment-secret", secret)
	}
	agents := sys.waitOnline(t, 50)
	perGateway := map[string]int{}
	ids := make([]string, 0, len(agents))
	for _, a := range agents {
		perGateway[a.GatewayID]++
		ids = append(ids, a.ID)
	}
	require.Equal(t, map[string]int{"gw-1": 25, "gw-2": 25}, perGateway)

	t.Run("fan-out to agents on both gateways", func(t *testing.T) {
		var created commandView
		code := sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": "hello fleet"}, "agent_targets": ids, "priority": "high",
		}, &created)
		require.Equal(t, http.StatusAccepted, code)
		require.Len(t, created.Executions, 50)

		done := sys.waitCommand(t, created.ID, 30*time.Second, 50*time.Millisecond)
		require.Equal(t, "succeeded", done.Status)
		require.Equal(t, map[string]int{"succeeded": 50}, done.Counts)
		for _, e := range done.Executions {
			require.Equal(t, "succeeded", e.Status, e.AgentID)
			require.Equal(t, "hello fleet", e.Output, e.AgentID)
			require.NotNil(t, e.ExitCode)
			require.Equal(t, 0, *e.ExitCode)
			require.Equal(t, 1, e.Attempts, "each execution ran once")
		}
	})

	t.Run("secret args reach the agent and leave the database", func(t *testing.T) {
		// The simulator refuses a password that is not a string: success means the
		// agent got the plaintext in a COMMAND it verified.
		var created commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "create_panel_user", "args": map[string]any{"username": "e2e-user", "password": "e2e-pass-4711"},
			"agent_targets": []string{ids[0]},
		}, &created))
		done := sys.waitCommand(t, created.ID, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, "succeeded", done.Status)
		require.Equal(t, "created panel user e2e-user", done.Executions[0].Output)
		db, err := sql.Open("pgx", c.getenv("DATABASE_URL"))
		require.NoError(t, err)
		defer db.Close()
		require.Eventually(t, func() bool {
			var args string
			var sealed bool
			require.NoError(t, db.QueryRow(`SELECT args::text, args_sealed FROM commands WHERE id = $1`, created.ID).Scan(&args, &sealed))
			require.NotContains(t, args, "e2e-pass-4711", "never in plaintext")
			return !sealed && strings.Contains(args, `"purged"`)
		}, 10*time.Second, 50*time.Millisecond, "the ciphertext is purged once the command is final")
	})

	t.Run("failing verb is recorded as failed", func(t *testing.T) {
		var created commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "fail", "args": map[string]any{"message": "disk full"}, "agent_targets": []string{ids[0]}, "max_retries": 0,
		}, &created))
		done := sys.waitCommand(t, created.ID, 30*time.Second, 20*time.Millisecond)
		require.Equal(t, "failed", done.Status)
		require.Equal(t, 1, *done.Executions[0].ExitCode)
	})

	t.Run("latency POST to succeeded", func(t *testing.T) {
		var samples []time.Duration
		for i := range 20 {
			target := ids[i%len(ids)]
			start := time.Now()
			var created commandView
			require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
				"verb": "echo", "args": map[string]any{"message": "ping"}, "agent_targets": []string{target},
			}, &created))
			done := sys.waitCommand(t, created.ID, 10*time.Second, time.Millisecond)
			samples = append(samples, time.Since(start))
			require.Equal(t, "succeeded", done.Status)
		}
		sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
		t.Logf("POST→succeeded over %d sequential single-target commands (polling GET every 1ms): median %s, p90 %s, max %s",
			len(samples), samples[len(samples)/2], samples[len(samples)*9/10], samples[len(samples)-1])
	})

	t.Run("selector with mode any runs on one agent", func(t *testing.T) {
		var created commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": "one of you"}, "mode": "any",
			"selector": map[string]any{"site": "e2e", "labels": map[string]string{"role": "sim"}},
		}, &created))
		require.Len(t, created.Executions, 1)
		done := sys.waitCommand(t, created.ID, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, "succeeded", done.Status)
		require.Equal(t, "one of you", done.Executions[0].Output)
	})

	t.Run("cancel a running command", func(t *testing.T) {
		var created commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "sleep", "args": map[string]any{"seconds": 30}, "agent_targets": []string{ids[1], ids[2]},
		}, &created))
		require.Eventually(t, func() bool {
			var v commandView
			sys.api.do(t, http.MethodGet, "/api/v1/commands/"+created.ID, nil, &v)
			return v.Counts["running"] == 2
		}, 10*time.Second, 10*time.Millisecond)
		var cancelled commandView
		require.Equal(t, http.StatusOK, sys.api.do(t, http.MethodDelete, "/api/v1/commands/"+created.ID, nil, &cancelled))
		require.Equal(t, "cancelled", cancelled.Status)
		require.Equal(t, map[string]int{"cancelled": 2}, cancelled.Counts)
		var p problem
		require.Equal(t, http.StatusConflict, sys.api.do(t, http.MethodDelete, "/api/v1/commands/"+created.ID, nil, &p))
		// The agents got CANCEL and stopped sleeping: they take new work at once.
		var next commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": "free again"}, "agent_targets": []string{ids[1]},
		}, &next))
		require.Equal(t, "succeeded", sys.waitCommand(t, next.ID, 10*time.Second, 10*time.Millisecond).Status)
	})

	t.Run("bad API input gets specific problems", func(t *testing.T) {
		var p problem
		code := sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "echo", "agent_targets": []string{"no-such-agent"}}, &p)
		require.Equal(t, http.StatusUnprocessableEntity, code)
		require.Equal(t, "agent_targets", p.Errors[0].Field)
		require.Contains(t, p.Errors[0].Message, "no-such-agent")

		p = problem{}
		code = sys.api.do(t, http.MethodPost, "/api/v1/commands", `{"verb": "echo", "agent_targets": [`, &p)
		require.Equal(t, http.StatusBadRequest, code)
		require.Equal(t, "body", p.Errors[0].Field)

		p = problem{}
		code = sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "Bad Verb!", "agent_targets": []string{ids[0]}, "priority": "urgent"}, &p)
		require.Equal(t, http.StatusBadRequest, code)
		fields := []string{}
		for _, e := range p.Errors {
			fields = append(fields, e.Field)
		}
		require.ElementsMatch(t, []string{"verb", "priority"}, fields)

		p = problem{}
		code = sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "format_disk", "agent_targets": []string{ids[0]}}, &p)
		require.Equal(t, http.StatusUnprocessableEntity, code, "a verb the agent does not announce fails fast")
		require.Equal(t, "verb", p.Errors[0].Field)

		p = problem{}
		code = sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "echo", "selector": map[string]any{"site": "nowhere"}}, &p)
		require.Equal(t, http.StatusUnprocessableEntity, code)
		require.Equal(t, "selector", p.Errors[0].Field)

		noToken := api{base: sys.api.base}
		require.Equal(t, http.StatusUnauthorized, noToken.do(t, http.MethodGet, "/api/v1/agents", nil, &p))
		badToken := api{base: sys.api.base, token: "not.a.jwt"}
		require.Equal(t, http.StatusUnauthorized, badToken.do(t, http.MethodGet, "/api/v1/agents", nil, &p))
		viewerTok, err := c.run("api-server", "token", "--subject", "v", "--role", "viewer")
		require.NoError(t, err)
		viewer := api{base: sys.api.base, token: strings.TrimSpace(viewerTok)}
		require.Equal(t, http.StatusForbidden, viewer.do(t, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "echo", "agent_targets": []string{ids[0]}}, &p))
		require.Equal(t, http.StatusOK, noToken.do(t, http.MethodGet, "/api/v1/health", nil, nil))
		require.Equal(t, http.StatusNotFound, sys.api.do(t, http.MethodGet, "/api/v1/commands/not-a-uuid", nil, &p))
	})

	t.Run("bad agent input gets specific close codes", func(t *testing.T) {
		gw := sys.gateways[0]
		// The bootstrap secret is not an agent credential: 401 before the upgrade.
		_, resp, err := websocket.DefaultDialer.Dial(gw, http.Header{"Authorization": {"Bearer " + sys.enrollKey}})
		require.Error(t, err)
		require.NotNil(t, resp)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))

		// A wrong enrollment secret gets no credential.
		code, _ := enroll(t, gw, "wrong-secret", "probe-1")
		require.Equal(t, http.StatusUnauthorized, code)
		code, cred := enroll(t, gw, sys.enrollKey, "probe-1")
		require.Equal(t, http.StatusCreated, code)
		auth := http.Header{"Authorization": {"Bearer " + cred}}
		closeCode := func(frames ...string) int {
			conn, _, err := websocket.DefaultDialer.Dial(gw, auth)
			require.NoError(t, err)
			defer conn.Close()
			for _, f := range frames {
				// The gateway may close while a large frame is still being written;
				// what matters is the close code it sent.
				if err := conn.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
					break
				}
			}
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				_, _, err := conn.ReadMessage()
				if ce, ok := err.(*websocket.CloseError); ok {
					return ce.Code
				}
				if err != nil {
					return -1
				}
			}
		}
		hello := `{"type":"HELLO","payload":{"agent_id":"probe-1","site":"x","version":"1","capabilities":["echo"]}}`
		require.Equal(t, 1007, closeCode(`{"type": "HELLO", "payload": {`), "malformed JSON")
		require.Equal(t, 1008, closeCode(`{"type":"HEARTBEAT","payload":{"status":"healthy"}}`), "first frame must be HELLO")
		// An invalid field costs the frame, not the session.
		conn, _, err := websocket.DefaultDialer.Dial(gw, auth)
		require.NoError(t, err)
		require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(hello)))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err := conn.ReadMessage()
		require.NoError(t, err)
		require.Contains(t, string(msg), `"type":"WELCOME"`)
		require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"HEARTBEAT","payload":{"status":"sleepy"}}`)))
		_, msg, err = conn.ReadMessage()
		require.NoError(t, err)
		require.Contains(t, string(msg), `"field":"payload.status"`)
		require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"NOPE","payload":{}}`)))
		_, msg, err = conn.ReadMessage()
		require.NoError(t, err, "the session is still open")
		require.Contains(t, string(msg), "unknown_type")
		conn.Close()
		require.Equal(t, 1009, closeCode(hello, `{"type":"TELEMETRY","payload":{"pad":"`+strings.Repeat("x", 2<<20)+`"}}`), "oversize frame")

		// Identity comes from the credential: probe-1 cannot pose as a fleet agent.
		conn, _, err = websocket.DefaultDialer.Dial(gw, auth)
		require.NoError(t, err)
		require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(strings.Replace(hello, "probe-1", ids[0], 1))))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, msg, err = conn.ReadMessage()
		require.NoError(t, err)
		require.Contains(t, string(msg), "identity_mismatch")
		_, _, err = conn.ReadMessage()
		var ce *websocket.CloseError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, 1008, ce.Code)
		conn.Close()

		// Enrolling again with the secret is refused; proving the current
		// credential rotates it, and the old one stops working.
		code, _ = enroll(t, gw, sys.enrollKey, "probe-1")
		require.Equal(t, http.StatusConflict, code)
		code, rotated := enrollAs(t, gw, "", "probe-1", cred)
		require.Equal(t, http.StatusCreated, code)
		require.NotEqual(t, cred, rotated)
		_, resp, err = websocket.DefaultDialer.Dial(gw, auth)
		require.Error(t, err)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		auth = http.Header{"Authorization": {"Bearer " + rotated}}

		// Unknown type: an ERROR frame, the session stays up.
		conn, _, err = websocket.DefaultDialer.Dial(gw, auth)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(hello)))
		require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"SELFDESTRUCT","payload":{}}`)))
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var sawWelcome, sawError bool
		for !(sawWelcome && sawError) {
			_, msg, err := conn.ReadMessage()
			require.NoError(t, err)
			sawWelcome = sawWelcome || strings.Contains(string(msg), `"WELCOME"`)
			sawError = sawError || (strings.Contains(string(msg), `"ERROR"`) && strings.Contains(string(msg), "unknown_type"))
		}
	})
}

// enroll posts to the gateway's enrollment endpoint (gw is its ws:// URL) and
// returns the status and, on success, the credential.
func enroll(t *testing.T, gw, secret, agentID string) (int, string) {
	t.Helper()
	u := strings.Replace(strings.Replace(gw, "ws://", "http://", 1), "/ws/agent", "/agent/v1/enroll", 1)
	body, err := json.Marshal(map[string]string{"enrollment_secret": secret, "agent_id": agentID})
	require.NoError(t, err)
	resp, err := http.Post(u, "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Credential string `json:"credential"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Credential
}
