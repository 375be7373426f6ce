package storetest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func hello(t *testing.T, s *store.Store, a store.AgentSession) {
	t.Helper()
	a.GatewayID, a.SessionID, a.At = "gw", "s-"+a.ID, time.Now()
	require.NoError(t, s.MarkAgentOnline(context.Background(), a))
}

func enrollmentSecret(t *testing.T, s *store.Store, hash, site string, labels map[string]string, allowed []string) {
	t.Helper()
	_, err := s.CreateEnrollmentSecret(context.Background(), store.NewEnrollmentSecret{Name: hash, SecretHash: hash, Site: site, Labels: labels,
		AllowedCapabilities: allowed, CreatedBy: "admin", Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.NoError(t, err)
}

// A rogue agent enrolled with the bootstrap secret claims site=prod, tier=db
// in its HELLO: no selector matches it, in mode all or any, nor does the
// agent list filter; the agent enrolled with a prod secret is matched.
func testReportedAttributesDoNotTarget(t *testing.T, s *store.Store) {
	ctx := context.Background()
	enrollmentSecret(t, s, "prod-db", "prod", map[string]string{"tier": "db"}, nil)
	_, err := s.EnrollWithSecret(ctx, "prod-db", "db-1", "cred-db", time.Now())
	require.NoError(t, err)
	hello(t, s, store.AgentSession{ID: "db-1", Site: "lab", Capabilities: []string{"exec"}})
	require.NoError(t, s.EnrollBootstrap(ctx, "rogue", "cred-rogue", 0, time.Now()))
	hello(t, s, store.AgentSession{ID: "rogue", Site: "prod", Labels: map[string]string{"tier": "db"}, Capabilities: []string{"exec"}})

	sel := &store.Selector{Site: "prod", Labels: map[string]string{"tier": "db"}}
	_, execs, err := s.CreateCommand(ctx, newCmd("exec", store.Targeting{Selector: sel}))
	require.NoError(t, err)
	require.Equal(t, []string{"db-1"}, execAgents(execs))
	for range 3 {
		c := newCmd("exec", store.Targeting{Selector: sel})
		c.Mode = store.ModeAny
		_, execs, err := s.CreateCommand(ctx, c)
		require.NoError(t, err)
		require.Equal(t, []string{"db-1"}, execAgents(execs))
	}
	_, _, err = s.CreateCommand(ctx, newCmd("exec", store.Targeting{Selector: &store.Selector{Labels: map[string]string{"tier": "db"}, Capability: "exec"}}))
	require.NoError(t, err)
	_, _, err = s.CreateCommand(ctx, newCmd("exec", store.Targeting{Selector: &store.Selector{Site: "lab"}}))
	require.ErrorIs(t, err, store.ErrNoMatchingAgents, "db-1's own claim is not trusted either")

	listed, err := s.ListAgents(ctx, store.AgentFilter{Site: "prod", Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"db-1"}, ids(listed))
	listed, err = s.ListAgents(ctx, store.AgentFilter{Labels: map[string]string{"tier": "db"}, Limit: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"db-1"}, ids(listed))

	rogue, err := s.GetAgent(ctx, "rogue")
	require.NoError(t, err)
	require.Equal(t, "", rogue.Site)
	require.Empty(t, rogue.Labels)
	require.Equal(t, store.AttributesFromNothing, rogue.AttributesSource)
	require.Equal(t, "prod", rogue.ReportedSite)
	require.Equal(t, store.StringMap{"tier": "db"}, rogue.ReportedLabels)
	db, err := s.GetAgent(ctx, "db-1")
	require.NoError(t, err)
	require.Equal(t, "prod", db.Site)
	require.Equal(t, store.AttributesFromEnrollment, db.AttributesSource)
	require.Equal(t, "lab", db.ReportedSite)
}

func testPatchAgentAttributes(t *testing.T, s *store.Store) {
	ctx := context.Background()
	hello(t, s, store.AgentSession{ID: "a1", Site: "prod", Labels: map[string]string{"tier": "db"}, Capabilities: []string{"echo"}})
	_, _, err := s.CreateCommand(ctx, newCmd("echo", store.Targeting{Selector: &store.Selector{Site: "prod"}}))
	require.ErrorIs(t, err, store.ErrNoMatchingAgents)

	prod, db, keep := "prod", "db", "x"
	a, err := s.PatchAgentAttributes(ctx, "a1", store.AttributesPatch{Site: &prod, Labels: map[string]*string{"tier": &db, "keep": &keep}, MaxLabels: 2,
		Audit: store.AuditEvent{Actor: "alice", Action: "agent.update"}})
	require.NoError(t, err)
	require.Equal(t, "prod", a.Site)
	require.Equal(t, store.AttributesFromAdmin, a.AttributesSource)
	_, execs, err := s.CreateCommand(ctx, newCmd("echo", store.Targeting{Selector: &store.Selector{Site: "prod", Labels: map[string]string{"tier": "db"}}}))
	require.NoError(t, err, "the change matches at once")
	require.Equal(t, []string{"a1"}, execAgents(execs))

	// A later HELLO does not change what the admin set.
	hello(t, s, store.AgentSession{ID: "a1", Site: "lab", Capabilities: []string{"echo"}})
	a, err = s.GetAgent(ctx, "a1")
	require.NoError(t, err)
	require.Equal(t, "prod", a.Site)
	require.Equal(t, store.StringMap{"tier": "db", "keep": "x"}, a.Labels)
	require.Equal(t, "lab", a.ReportedSite)

	// Merge patch: null removes a label, absent ones stay, no site keeps it.
	a, err = s.PatchAgentAttributes(ctx, "a1", store.AttributesPatch{Labels: map[string]*string{"tier": nil}, MaxLabels: 2,
		Audit: store.AuditEvent{Actor: "alice", Action: "agent.update"}})
	require.NoError(t, err)
	require.Equal(t, "prod", a.Site)
	require.Equal(t, store.StringMap{"keep": "x"}, a.Labels)
	_, _, err = s.CreateCommand(ctx, newCmd("echo", store.Targeting{Selector: &store.Selector{Labels: map[string]string{"tier": "db"}}}))
	require.ErrorIs(t, err, store.ErrNoMatchingAgents)

	one, two := "1", "2"
	_, err = s.PatchAgentAttributes(ctx, "a1", store.AttributesPatch{Labels: map[string]*string{"a": &one, "b": &two}, MaxLabels: 2,
		Audit: store.AuditEvent{Actor: "alice", Action: "agent.update"}})
	require.ErrorIs(t, err, store.ErrTooManyLabels)
	_, err = s.PatchAgentAttributes(ctx, "nobody", store.AttributesPatch{Site: &prod, MaxLabels: 2,
		Audit: store.AuditEvent{Actor: "alice", Action: "agent.update"}})
	require.ErrorIs(t, err, store.ErrNotFound)

	audits, _, err := s.ListAudit(ctx, store.AuditFilter{Action: "agent.update"})
	require.NoError(t, err)
	require.Len(t, audits, 2)
	first := audits[0]
	if first.ID > audits[1].ID {
		first = audits[1]
	}
	require.Equal(t, "alice", first.Actor)
	require.Equal(t, "a1", first.Target)
	var d struct{ Before, After store.AgentAttributes }
	require.NoError(t, json.Unmarshal(first.Details, &d))
	require.Equal(t, store.AgentAttributes{Site: "", Labels: map[string]string{}}, d.Before)
	require.Equal(t, store.AgentAttributes{Site: "prod", Labels: map[string]string{"tier": "db", "keep": "x"}}, d.After)

	// Enrolling again (after a revocation an admin lifted) replaces what
	// the admin set with what that enrollment fixes.
	_, err = s.RevokeAgent(ctx, "a1", store.AuditEvent{Actor: "admin", Action: "agent.revoke"})
	require.NoError(t, err)
	require.NoError(t, s.UnrevokeAgent(ctx, "a1", store.AuditEvent{Actor: "admin", Action: "agent.unrevoke"}))
	require.NoError(t, s.EnrollBootstrap(ctx, "a1", "cred-a1", 0, time.Now()))
	a, err = s.GetAgent(ctx, "a1")
	require.NoError(t, err)
	require.Equal(t, "", a.Site)
	require.Empty(t, a.Labels)
	require.Equal(t, store.AttributesFromNothing, a.AttributesSource)
}

func testAllowedCapabilities(t *testing.T, s *store.Store) {
	ctx := context.Background()
	// An agent already registered is restricted at its enrollment.
	// (Known without a credential, it is enrolled again after a
	// revocation an admin lifted: enrollment never takes a known id.)
	hello(t, s, store.AgentSession{ID: "e1", Capabilities: []string{"echo", "exec"}})
	_, err := s.RevokeAgent(ctx, "e1", store.AuditEvent{Actor: "admin", Action: "agent.revoke"})
	require.NoError(t, err)
	require.NoError(t, s.UnrevokeAgent(ctx, "e1", store.AuditEvent{Actor: "admin", Action: "agent.unrevoke"}))
	enrollmentSecret(t, s, "echo-only", "edge", nil, []string{"echo"})
	_, err = s.EnrollWithSecret(ctx, "echo-only", "e1", "cred-e1", time.Now())
	require.NoError(t, err)
	a, err := s.GetAgent(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, store.StringList{"echo"}, a.Capabilities)
	// ... and at every HELLO.
	hello(t, s, store.AgentSession{ID: "e1", Capabilities: []string{"exec", "echo", "sleep"}})
	a, err = s.GetAgent(ctx, "e1")
	require.NoError(t, err)
	require.Equal(t, store.StringList{"echo"}, a.Capabilities)
	require.Equal(t, store.StringList{"exec", "echo", "sleep"}, a.ReportedCapabilities)
	require.Equal(t, "edge", a.Site)

	_, _, err = s.CreateCommand(ctx, newCmd("exec", store.Targeting{Selector: &store.Selector{Capability: "exec"}}))
	require.ErrorIs(t, err, store.ErrNoMatchingAgents)
	_, _, err = s.CreateCommand(ctx, newCmd("exec", store.Targeting{AgentIDs: []string{"e1"}}))
	var incapable *store.IncapableAgentsError
	require.ErrorAs(t, err, &incapable)
	require.Equal(t, []string{"e1"}, incapable.IDs)
	_, _, err = s.CreateCommand(ctx, newCmd("exec", store.Targeting{Selector: &store.Selector{Site: "edge"}}))
	require.ErrorAs(t, err, &incapable, "fail-fast uses the allowed capabilities")
	listed, err := s.ListAgents(ctx, store.AgentFilter{Capability: "exec", Limit: 10})
	require.NoError(t, err)
	require.Empty(t, listed)

	list, _, err := s.ListEnrollmentSecrets(ctx, store.Page{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, &store.StringList{"echo"}, list[0].AllowedCapabilities)

	// A secret without a list allows any capability; the bootstrap secret lifts the list.
	enrollmentSecret(t, s, "any", "edge", nil, nil)
	_, err = s.EnrollWithSecret(ctx, "any", "e2", "cred-e2", time.Now())
	require.NoError(t, err)
	hello(t, s, store.AgentSession{ID: "e2", Capabilities: []string{"exec"}})
	_, err = s.RevokeAgent(ctx, "e1", store.AuditEvent{Actor: "admin", Action: "agent.revoke"})
	require.NoError(t, err)
	require.NoError(t, s.UnrevokeAgent(ctx, "e1", store.AuditEvent{Actor: "admin", Action: "agent.unrevoke"}))
	require.NoError(t, s.EnrollBootstrap(ctx, "e1", "cred-e1b", 0, time.Now()))
	hello(t, s, store.AgentSession{ID: "e1", Capabilities: []string{"exec"}})
	for _, id := range []string{"e1", "e2"} {
		a, err := s.GetAgent(ctx, id)
		require.NoError(t, err)
		require.Equal(t, store.StringList{"exec"}, a.Capabilities, id)
	}
}

func testTrustReportedAttributes(t *testing.T, s *store.Store) {
	ctx := context.Background()
	hello(t, s, store.AgentSession{ID: "r1", Site: "prod", Labels: map[string]string{"tier": "db"}, TrustReported: true})
	a, err := s.GetAgent(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, "prod", a.Site)
	require.Equal(t, store.StringMap{"tier": "db"}, a.Labels)
	require.Equal(t, store.AttributesFromReported, a.AttributesSource)
	hello(t, s, store.AgentSession{ID: "r1", Site: "lab", TrustReported: true})
	a, err = s.GetAgent(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, "lab", a.Site, "each HELLO's claims, while nothing fixed them")
	// Without the switch the claims are no longer trusted.
	hello(t, s, store.AgentSession{ID: "r1", Site: "lab"})
	a, err = s.GetAgent(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, "", a.Site)

	// What an enrollment secret or an admin fixed wins even then.
	enrollmentSecret(t, s, "dc1", "dc1", nil, nil)
	_, err = s.EnrollWithSecret(ctx, "dc1", "e1", "cred-e1", time.Now())
	require.NoError(t, err)
	hello(t, s, store.AgentSession{ID: "e1", Site: "prod", TrustReported: true})
	trust(t, s, "r1", "admin-site", nil)
	hello(t, s, store.AgentSession{ID: "r1", Site: "prod", TrustReported: true})
	for id, site := range map[string]string{"e1": "dc1", "r1": "admin-site"} {
		a, err := s.GetAgent(ctx, id)
		require.NoError(t, err)
		require.Equal(t, site, a.Site, id)
	}
}
