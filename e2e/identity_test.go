package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// enrollAs posts an enrollment to gateway gw (its ws:// URL): with secret, or
// with bearer (rotation: the current credential) when set.
func enrollAs(t *testing.T, gw, secret, agentID, bearer string) (int, string) {
	t.Helper()
	u := strings.Replace(strings.Replace(gw, "ws://", "http://", 1), "/ws/agent", "/agent/v1/enroll", 1)
	body, err := json.Marshal(map[string]string{"enrollment_secret": secret, "agent_id": agentID})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Credential string `json:"credential"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Credential
}

func (s system) agent(t *testing.T, id string) (int, agentView) {
	t.Helper()
	var a agentView
	code := s.api.do(t, http.MethodGet, "/api/v1/agents/"+id, nil, &a)
	return code, a
}

// TestIdentityBoundary attacks agent identity on a split install with two
// gateways, holding only the bootstrap enrollment secret every agent host has.
func TestIdentityBoundary(t *testing.T) {
	c := newCluster(t)
	sys := startSystem(t, c)
	adminTok, err := c.run("api-server", "token", "--subject", "e2e-admin", "--role", "admin", "--ttl", "1h")
	require.NoError(t, err)
	admin := api{base: sys.api.base, token: strings.TrimSpace(adminTok)}
	c.start("agentsim", "agentsim", nil, "--gateway", sys.gateways[0], "--agents", "1", "--prefix", "real-",
		"--enrollment-secret", sys.enrollKey, "--state-dir", filepath.Join(t.TempDir(), "agents"))
	online := sys.waitOnline(t, 1)
	require.Equal(t, "gw-1", online[0].GatewayID)
	echo := func(id, msg string) commandView {
		var created commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": msg}, "agent_targets": []string{id}, "max_retries": 0,
		}, &created))
		return sys.waitCommand(t, created.ID, 20*time.Second, 20*time.Millisecond)
	}

	t.Run("takeover by re-enrollment is refused", func(t *testing.T) {
		// The attacker enrolls the live agent's id with the bootstrap secret,
		// on the other gateway.
		code, cred := enrollAs(t, sys.gateways[1], sys.enrollKey, "real-0", "")
		require.Equal(t, http.StatusConflict, code)
		require.Empty(t, cred)
		// The real agent keeps its session and its commands.
		time.Sleep(500 * time.Millisecond)
		code, a := sys.agent(t, "real-0")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "online", a.Status)
		require.Equal(t, "gw-1", a.GatewayID)
		done := echo("real-0", "still mine")
		require.Equal(t, "succeeded", done.Status)
		require.Equal(t, "still mine", done.Executions[0].Output)
		for _, p := range c.Procs() {
			if p.Name == "agentsim" {
				require.NotContains(t, p.Tail(100000), "agent disconnected", "the real agent was not kicked")
			}
		}
	})

	t.Run("rotation with the current credential", func(t *testing.T) {
		code, cred := enrollAs(t, sys.gateways[0], sys.enrollKey, "rot-1", "")
		require.Equal(t, http.StatusCreated, code)
		code, _ = enrollAs(t, sys.gateways[1], "", "rot-1", "not-"+cred)
		require.Equal(t, http.StatusUnauthorized, code)
		code, rotated := enrollAs(t, sys.gateways[1], "", "rot-1", cred)
		require.Equal(t, http.StatusCreated, code)
		require.NotEqual(t, cred, rotated)
		code, _ = enrollAs(t, sys.gateways[0], "", "rot-1", cred)
		require.Equal(t, http.StatusUnauthorized, code, "the old credential is dead")
	})

	t.Run("admin re-enrollment secret works once", func(t *testing.T) {
		code, _ := enrollAs(t, sys.gateways[0], sys.enrollKey, "wiped-1", "")
		require.Equal(t, http.StatusCreated, code)
		// Its disk was wiped: the credential is lost.
		var rs struct {
			Secret string `json:"secret"`
		}
		require.Equal(t, http.StatusForbidden, sys.api.do(t, http.MethodPost, "/api/v1/agents/wiped-1/reenroll-secret", nil, nil), "operators may not")
		require.Equal(t, http.StatusCreated, admin.do(t, http.MethodPost, "/api/v1/agents/wiped-1/reenroll-secret", map[string]any{"expires_in": 600}, &rs))
		code, _ = enrollAs(t, sys.gateways[1], rs.Secret, "other-1", "")
		require.Equal(t, http.StatusUnauthorized, code, "bound to its id")
		code, cred := enrollAs(t, sys.gateways[1], rs.Secret, "wiped-1", "")
		require.Equal(t, http.StatusCreated, code)
		require.NotEmpty(t, cred)
		code, _ = enrollAs(t, sys.gateways[0], rs.Secret, "wiped-1", "")
		require.Equal(t, http.StatusUnauthorized, code, "single use")
	})

	t.Run("a lab-scoped secret cannot claim a prod agent", func(t *testing.T) {
		code, _ := enrollAs(t, sys.gateways[0], sys.enrollKey, "prod-db1", "")
		require.Equal(t, http.StatusCreated, code)
		var sec struct {
			Secret string `json:"secret"`
		}
		require.Equal(t, http.StatusCreated, admin.do(t, http.MethodPost, "/api/v1/enrollment-secrets",
			map[string]any{"name": "lab", "site": "lab", "agent_id_pattern": "lab-[0-9]+", "max_agents": 2}, &sec))
		for _, id := range []string{"prod-db1", "prod-new", "real-0"} {
			code, _ = enrollAs(t, sys.gateways[1], sec.Secret, id, "")
			require.Equal(t, http.StatusForbidden, code, id)
		}
		for _, id := range []string{"lab-1", "lab-2"} {
			code, _ = enrollAs(t, sys.gateways[1], sec.Secret, id, "")
			require.Equal(t, http.StatusCreated, code, id)
		}
		code, _ = enrollAs(t, sys.gateways[0], sec.Secret, "lab-3", "")
		require.Equal(t, http.StatusForbidden, code, "max_agents")
	})

	t.Run("revoke closes the live session and cancels its work", func(t *testing.T) {
		var running, second commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "sleep", "args": map[string]any{"seconds": 60}, "agent_targets": []string{"real-0"}, "timeout_seconds": 120,
		}, &running))
		require.Eventually(t, func() bool {
			var v commandView
			sys.api.do(t, http.MethodGet, "/api/v1/commands/"+running.ID, nil, &v)
			return v.Counts["running"] == 1
		}, 10*time.Second, 10*time.Millisecond)
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "sleep", "args": map[string]any{"seconds": 60}, "agent_targets": []string{"real-0"}, "timeout_seconds": 120,
		}, &second))

		start := time.Now()
		var ended struct {
			CancelledExecutions int `json:"cancelled_executions"`
		}
		require.Equal(t, http.StatusOK, admin.do(t, http.MethodPost, "/api/v1/agents/real-0/revoke", nil, &ended))
		require.Equal(t, 2, ended.CancelledExecutions)
		for {
			_, a := sys.agent(t, "real-0")
			if a.Status == "offline" {
				break
			}
			require.Less(t, time.Since(start), 1500*time.Millisecond, "the live session is closed within a second")
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("revoke → agent offline in %s", time.Since(start))
		for _, id := range []string{running.ID, second.ID} {
			done := sys.waitCommand(t, id, 10*time.Second, 20*time.Millisecond)
			require.Equal(t, "cancelled", done.Status, id)
		}
		// Enrolling it again with the bootstrap secret does not undo the revocation.
		code, _ := enrollAs(t, sys.gateways[1], sys.enrollKey, "real-0", "")
		require.Equal(t, http.StatusConflict, code)
		time.Sleep(time.Second)
		_, a := sys.agent(t, "real-0")
		require.Equal(t, "offline", a.Status, "the revoked agent stays out")
		// Until the admin lifts the block.
		require.Equal(t, http.StatusNoContent, admin.do(t, http.MethodPost, "/api/v1/agents/real-0/unrevoke", nil, nil))
		code, _ = enrollAs(t, sys.gateways[1], sys.enrollKey, "real-0", "")
		require.Equal(t, http.StatusCreated, code)
	})

	t.Run("bootstrap cap", func(t *testing.T) {
		port := freePort(t)
		gw := c.start("gateway-capped", "agent-gateway", []string{"VIWORKS_INSTANCE_ID=gw-capped", "AGENT_ENROLLMENT_MAX_AGENTS=3"}, "--port", strconv.Itoa(port))
		waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), gw)
		url := fmt.Sprintf("ws://127.0.0.1:%d/ws/agent", port)
		for i := range 3 {
			code, _ := enrollAs(t, url, sys.enrollKey, fmt.Sprintf("cap-%d", i), "")
			require.Equal(t, http.StatusCreated, code, i)
		}
		code, _ := enrollAs(t, url, sys.enrollKey, "cap-3", "")
		require.Equal(t, http.StatusForbidden, code)
	})

	// Last: it blocks this address's enrollments for a minute.
	t.Run("failed enrollments are limited across gateways", func(t *testing.T) {
		// The wrong credentials and secrets above were failures already; the
		// budget is 10 per minute for the address on all gateways together.
		guesses := 0
		for i := 0; ; i++ {
			code, _ := enrollAs(t, sys.gateways[i%2], "wrong-guess", "guess", "")
			if code == http.StatusTooManyRequests {
				break
			}
			require.Equal(t, http.StatusUnauthorized, code, i)
			guesses++
			require.Less(t, guesses, 10, "more guesses than one address's budget")
		}
		t.Logf("guesses before 429 (after this test's earlier failures): %d", guesses)
		for _, gw := range sys.gateways {
			code, _ := enrollAs(t, gw, sys.enrollKey, "after-guessing", "")
			require.Equal(t, http.StatusTooManyRequests, code)
		}
	})
}
