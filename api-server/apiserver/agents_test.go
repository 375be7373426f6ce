package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
)

// What an agent claims in HELLO is shown as reported and matched by no
// filter; PATCH sets the trusted attributes, matched at once, audited and
// published.
func TestPatchAgentAttributesAPI(t *testing.T) {
	b := bus.NewMemory()
	a := newReadAPI(t, store.SQLitePrefix+filepath.Join(t.TempDir(), "v.db"), b, Config{})
	ctx := context.Background()
	require.NoError(t, a.st.MarkAgentOnline(ctx, store.AgentSession{ID: "rogue", Site: "prod", Labels: map[string]string{"tier": "db"},
		Capabilities: []string{"exec"}, GatewayID: "gw", SessionID: "s", At: time.Now()}))

	v := decode[AgentView](t, a.get("/api/v1/agents/rogue"))
	require.Equal(t, "", v.Site)
	require.Equal(t, map[string]string{}, v.Labels)
	require.Equal(t, "prod", v.ReportedSite)
	require.Equal(t, map[string]string{"tier": "db"}, v.ReportedLabels)
	require.Equal(t, []string{"exec"}, v.ReportedCapabilities)
	require.Equal(t, store.AttributesFromNothing, v.AttributesSource)
	require.Empty(t, agentIDs(t, a.get("/api/v1/agents?site=prod")))
	require.Empty(t, agentIDs(t, a.get("/api/v1/agents?label=tier=db")))

	for body, fields := range map[string][]string{
		`{}`:          {"site"},
		`{"site": 5}`: {"site"},
		`{"site": "` + strings.Repeat("s", 257) + `"}`: {"site"},
		`{"labels": ["a"]}`:                            {"labels"},
		`{"labels": {"": "x"}}`:                        {"labels"},
		`{"labels": {"k": 5}}`:                         {"labels"},
		`{"capabilities": ["exec"]}`:                   {"body"},
	} {
		require.Equal(t, fields, problemFields(t, a.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/rogue", body), http.StatusBadRequest), body)
	}
	problemFields(t, a.do(auth.RoleOperator, http.MethodPatch, "/api/v1/agents/rogue", `{"site":"x"}`), http.StatusForbidden)
	problemFields(t, a.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/nobody", `{"site":"x"}`), http.StatusNotFound)

	sub, err := b.Subscribe(ctx, events.Topic)
	require.NoError(t, err)
	defer sub.Close()
	w := a.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/rogue", `{"site":"lab","labels":{"tier":"web","x":"1"}}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v = decode[AgentView](t, w)
	require.Equal(t, "lab", v.Site)
	require.Equal(t, store.AttributesFromAdmin, v.AttributesSource)
	require.Equal(t, []string{"rogue"}, agentIDs(t, a.get("/api/v1/agents?site=lab&label=tier=web")))
	select {
	case m := <-sub.Messages():
		evs, err := events.Decode(m.Payload)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, events.AgentUpdated, evs[0].Type)
		require.Equal(t, "rogue", evs[0].AgentID)
	case <-time.After(5 * time.Second):
		t.Fatal("no agent.updated event")
	}

	w = a.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/rogue", `{"labels":{"x":null}}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, map[string]string{"tier": "web"}, decode[AgentView](t, w).Labels)
	w = a.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/rogue", `{"site":null,"labels":null}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v = decode[AgentView](t, w)
	require.Equal(t, "", v.Site)
	require.Equal(t, map[string]string{}, v.Labels)

	audits, _, err := a.st.ListAudit(ctx, store.AuditFilter{Action: "agent.update"})
	require.NoError(t, err)
	require.Len(t, audits, 3)
	for _, e := range audits {
		require.Equal(t, "admin-user", e.Actor)
		require.Equal(t, "rogue", e.Target)
		var d map[string]store.AgentAttributes
		require.NoError(t, json.Unmarshal(e.Details, &d))
		require.Contains(t, d, "before")
		require.Contains(t, d, "after")
	}
}

func TestEnrollmentSecretAllowedCapabilities(t *testing.T) {
	a := newReadAPI(t, store.SQLitePrefix+filepath.Join(t.TempDir(), "v.db"), bus.NewMemory(), Config{})
	w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/enrollment-secrets", `{"name":"edge","site":"edge","allowed_capabilities":["echo"]}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	require.Equal(t, []string{"echo"}, decode[EnrollmentSecretView](t, w).AllowedCapabilities)
	w = a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/enrollment-secrets", `{"name":"any"}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	require.Nil(t, decode[EnrollmentSecretView](t, w).AllowedCapabilities)
	require.Contains(t, w.Body.String(), `"allowed_capabilities":null`)
	require.Equal(t, []string{"allowed_capabilities"}, problemFields(t,
		a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/enrollment-secrets", `{"name":"bad","allowed_capabilities":[""]}`), http.StatusBadRequest))
}
