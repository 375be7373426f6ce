package e2e

import (
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// admin returns an API client with an admin token.
func (s system) admin(t *testing.T, c *testCluster) api {
	t.Helper()
	tok, err := c.run("api-server", "token", "--subject", "e2e-admin", "--role", "admin", "--ttl", "1h")
	require.NoError(t, err)
	return api{base: s.api.base, token: strings.TrimSpace(tok)}
}

// issueEnrollmentSecret creates an enrollment secret through the API, as an
// operator does, and returns the secret.
func issueEnrollmentSecret(t *testing.T, admin api, body map[string]any) string {
	t.Helper()
	var sec struct {
		Secret string `json:"secret"`
	}
	require.Equal(t, http.StatusCreated, admin.do(t, http.MethodPost, "/api/v1/enrollment-secrets", body, &sec))
	require.NotEmpty(t, sec.Secret)
	return sec.Secret
}

func executedBy(cmd commandView) []string {
	out := []string{}
	for _, e := range cmd.Executions {
		out = append(out, e.AgentID)
	}
	sort.Strings(out)
	return out
}

// A rogue agent holding the bootstrap enrollment secret claims site=prod,
// tier=db in its HELLO. Commands for prod databases (selector, mode all and
// mode any) go only to the agent enrolled with the prod secret; the list
// filters do not show the rogue; an admin's PATCH changes what matches at
// once; an enrollment secret's allowed_capabilities bound what its agents are
// targeted for. Real binaries, two gateways, real Postgres and Redis.
func TestReportedAttributesAreNotTrusted(t *testing.T) {
	c := newCluster(t)
	sys := startSystem(t, c)
	admin := sys.admin(t, c)

	prod := issueEnrollmentSecret(t, admin, map[string]any{"name": "prod db", "site": "prod", "labels": map[string]string{"tier": "db"}})
	edge := issueEnrollmentSecret(t, admin, map[string]any{"name": "edge", "site": "edge", "allowed_capabilities": []string{"echo"}})
	c.start("agentsim-prod", "agentsim", nil, "--gateway", sys.gateways[0], "--agents", "1", "--prefix", "prod-db-",
		"--enrollment-secret", prod)
	c.start("agentsim-rogue", "agentsim", nil, "--gateway", sys.gateways[1], "--agents", "3", "--prefix", "rogue-",
		"--enrollment-secret", sys.enrollKey, "--site", "prod", "--labels", "tier=db")
	c.start("agentsim-edge", "agentsim", nil, "--gateway", sys.gateways[1], "--agents", "1", "--prefix", "edge-",
		"--enrollment-secret", edge)
	sys.waitOnline(t, 5)

	forProd := map[string]any{"site": "prod", "labels": map[string]string{"tier": "db"}}
	var created commandView
	require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"message": "db password"}, "selector": forProd}, &created))
	require.Equal(t, []string{"prod-db-0"}, executedBy(created), "mode all")
	require.Equal(t, "succeeded", sys.waitCommand(t, created.ID, 30*time.Second, 20*time.Millisecond).Status)
	for range 3 {
		var one commandView
		require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
			"verb": "echo", "args": map[string]any{"message": "db password"}, "selector": forProd, "mode": "any"}, &one))
		require.Equal(t, []string{"prod-db-0"}, executedBy(one), "mode any")
	}

	var list struct {
		Items []struct {
			ID           string            `json:"id"`
			Site         string            `json:"site"`
			ReportedSite string            `json:"reported_site"`
			Labels       map[string]string `json:"labels"`
		} `json:"items"`
	}
	require.Equal(t, http.StatusOK, sys.api.do(t, http.MethodGet, "/api/v1/agents?site=prod&label=tier=db", nil, &list))
	require.Len(t, list.Items, 1)
	require.Equal(t, "prod-db-0", list.Items[0].ID)
	require.Equal(t, http.StatusOK, sys.api.do(t, http.MethodGet, "/api/v1/agents?q=rogue-", nil, &list))
	require.Len(t, list.Items, 3)
	for _, a := range list.Items {
		require.Equal(t, "", a.Site, a.ID)
		require.Equal(t, "prod", a.ReportedSite, a.ID)
	}

	// The admin vouches for one rogue agent: it matches at once.
	require.Equal(t, http.StatusOK, admin.do(t, http.MethodPatch, "/api/v1/agents/rogue-1", map[string]any{"site": "prod", "labels": map[string]string{"tier": "db"}}, nil))
	require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"message": "hi"}, "selector": forProd}, &created))
	require.Equal(t, []string{"prod-db-0", "rogue-1"}, executedBy(created))
	require.Equal(t, "succeeded", sys.waitCommand(t, created.ID, 30*time.Second, 20*time.Millisecond).Status)
	require.Equal(t, http.StatusOK, admin.do(t, http.MethodPatch, "/api/v1/agents/rogue-1", map[string]any{"site": nil}, nil))
	require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"message": "hi"}, "selector": forProd}, &created))
	require.Equal(t, []string{"prod-db-0"}, executedBy(created))

	// The edge agent announces fail but its secret allows only echo.
	var p problem
	require.Equal(t, http.StatusUnprocessableEntity, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "fail", "args": map[string]any{"message": "x"}, "selector": map[string]any{"site": "edge"}}, &p))
	require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"message": "hi"}, "selector": map[string]any{"site": "edge"}}, &created))
	require.Equal(t, []string{"edge-0"}, executedBy(created))
	require.Equal(t, "succeeded", sys.waitCommand(t, created.ID, 30*time.Second, 20*time.Millisecond).Status)
}
