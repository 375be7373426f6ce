package apiserver

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
)

// Revoking an agent kills its credential, cancels its open executions, tells
// every gateway (bus) and the event stream, and is audited with its actor;
// only admins may.
func TestRevokeAndDeleteAgent(t *testing.T) {
	a := newSecAPI(t, nil, Config{})
	ctx := context.Background()
	require.NoError(t, a.st.EnrollBootstrap(ctx, "prod-db1", "cred-hash", 0, time.Now()))
	require.NoError(t, a.st.MarkAgentOnline(ctx, store.AgentSession{ID: "prod-db1", Capabilities: []string{"echo"}, GatewayID: "gw", SessionID: "s1", At: time.Now()}))
	cmd, _, err := a.st.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"prod-db1"}}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
	require.NoError(t, err)
	sub, err := a.mem.Subscribe(ctx, bus.TopicAgents, events.Topic)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })

	require.Equal(t, http.StatusForbidden, a.req("operator", "POST", "/api/v1/agents/prod-db1/revoke", "").Code)
	require.Equal(t, http.StatusNotFound, a.req("admin", "POST", "/api/v1/agents/nobody/revoke", "").Code)
	w := a.req("admin", "POST", "/api/v1/agents/prod-db1/revoke", "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	got := decode[AgentEndedView](t, w)
	require.Equal(t, AgentEndedView{AgentID: "prod-db1", CancelledExecutions: 1, EnrollmentBlocked: true}, got)

	_, err = a.st.AgentForCredential(ctx, "cred-hash")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	_, execs, err := a.st.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.ExecCancelled, execs[0].Status)
	require.Equal(t, "agent revoked", execs[0].Error)
	audits := a.auditActions("agent.revoke")
	require.Len(t, audits, 1)
	require.Equal(t, "admin-user", audits[0].Actor)
	require.Equal(t, "prod-db1", audits[0].Target)

	seen := map[string]string{}
	timeout := time.After(5 * time.Second)
	for len(seen) < 2 {
		select {
		case m := <-sub.Messages():
			seen[m.Topic] = string(m.Payload)
		case <-timeout:
			t.Fatalf("messages seen: %v", seen)
		}
	}
	require.Contains(t, seen[bus.TopicAgents], `"agent_id":"prod-db1"`)
	require.Contains(t, seen[events.Topic], `"type":"agent.revoked"`)

	require.ErrorIs(t, a.st.EnrollBootstrap(ctx, "prod-db1", "again", 0, time.Now()), store.ErrAgentRevoked)
	require.Equal(t, http.StatusNoContent, a.req("admin", "POST", "/api/v1/agents/prod-db1/unrevoke", "").Code)
	require.Equal(t, http.StatusNotFound, a.req("admin", "POST", "/api/v1/agents/prod-db1/unrevoke", "").Code)
	require.Len(t, a.auditActions("agent.unrevoke"), 1)

	// A re-enrollment secret: admin only, shown once, bounded lifetime.
	require.Equal(t, http.StatusForbidden, a.req("operator", "POST", "/api/v1/agents/prod-db1/reenroll-secret", "").Code)
	require.Equal(t, []string{"expires_in"}, problemFields(t, a.req("admin", "POST", "/api/v1/agents/prod-db1/reenroll-secret", `{"expires_in":30}`), http.StatusBadRequest))
	w = a.req("admin", "POST", "/api/v1/agents/prod-db1/reenroll-secret", "")
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	rs := decode[ReenrollSecretView](t, w)
	require.True(t, strings.HasPrefix(rs.Secret, store.ReenrollSecretPrefix))
	require.WithinDuration(t, time.Now().Add(24*time.Hour), rs.ExpiresAt, time.Minute)
	require.NoError(t, a.st.ReenrollAgent(ctx, "prod-db1", HashSecret(rs.Secret), "fresh", time.Now()))
	require.Len(t, a.auditActions("agent.reenroll_secret"), 1)

	// Deleting forgets the agent.
	w = a.req("admin", "DELETE", "/api/v1/agents/prod-db1", "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, http.StatusNotFound, a.req("viewer", "GET", "/api/v1/agents/prod-db1", "").Code)
	require.Equal(t, http.StatusNotFound, a.req("admin", "DELETE", "/api/v1/agents/prod-db1", "").Code)
	require.Len(t, a.auditActions("agent.delete"), 1)
}

func TestEnrollmentSecretScope(t *testing.T) {
	a := newSecAPI(t, nil, Config{})
	for _, tc := range []struct{ body, field string }{
		{`{"name":"x","agent_id_pattern":"lab-("}`, "agent_id_pattern"},
		{`{"name":"x","agent_id_pattern":"` + strings.Repeat("a", 300) + `"}`, "agent_id_pattern"},
		{`{"name":"x","max_agents":0}`, "max_agents"},
	} {
		require.Equal(t, []string{tc.field}, problemFields(t, a.req("admin", "POST", "/api/v1/enrollment-secrets", tc.body), http.StatusBadRequest), tc.body)
	}
	w := a.req("admin", "POST", "/api/v1/enrollment-secrets", `{"name":"lab","site":"lab","agent_id_pattern":"lab-[0-9]+","max_agents":1}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	sec := decode[EnrollmentSecretView](t, w)
	require.Equal(t, "lab-[0-9]+", sec.AgentIDPattern)
	require.Equal(t, 1, *sec.MaxAgents)
	_, err := a.st.EnrollWithSecret(context.Background(), HashSecret(sec.Secret), "prod-db1", "c1", time.Now())
	require.ErrorIs(t, err, store.ErrAgentIDNotAllowed)
	_, err = a.st.EnrollWithSecret(context.Background(), HashSecret(sec.Secret), "lab-1", "c1", time.Now())
	require.NoError(t, err)
	list := decode[List[EnrollmentSecretView]](t, a.req("admin", "GET", "/api/v1/enrollment-secrets", ""))
	require.Equal(t, 1, list.Items[0].Agents)
}
