package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
)

func TestCommandPreviewAPI(t *testing.T) { eachDB(t, testCommandPreviewAPI) }

func testCommandPreviewAPI(t *testing.T, a *readAPI) {
	ctx := context.Background()
	a.agent("p1", "prod", "gw1", []string{"echo"}, map[string]string{"role": "web"})
	a.agent("p2", "prod", "gw1", []string{"echo", "sleep"}, map[string]string{"role": "db"})
	a.agent("p3", "prod", "gw1", []string{"echo"}, map[string]string{"role": "web"})
	a.agent("l1", "lab", "gw1", []string{"echo"}, map[string]string{"role": "web"})
	now := time.Now()
	require.NoError(t, a.st.TouchAgents(ctx, []store.HealthUpdate{
		{AgentID: "p2", Status: "healthy", At: now.Add(-10 * time.Minute)}, // connected, silent since: stale
	}))
	_, err := a.st.MarkAgentOffline(ctx, "p3", "s-p3", now)
	require.NoError(t, err)
	// An agent that claims site prod and role web in its HELLO, but whose
	// trusted attributes an admin set to lab: a selector must not take the claim.
	a.agent("liar", "lab", "gw1", []string{"echo"}, nil)
	require.NoError(t, a.st.MarkAgentOnline(ctx, store.AgentSession{
		ID: "liar", Site: "prod", Hostname: "host-liar", Capabilities: []string{"echo"}, Labels: map[string]string{"role": "web"},
		GatewayID: "gw1", SessionID: "s-liar-2", At: now,
	}))

	cases := []struct {
		name    string
		body    string
		want    PreviewView
		wantIDs []string
	}{
		{"site", `{"selector":{"site":"prod"}}`,
			PreviewView{Mode: "all", Matched: 3, Online: 1, Stale: 1, Offline: 1}, []string{"p1", "p2", "p3"}},
		{"site and label, mode any, verb ignored", `{"verb":"NOT A VERB","args":[1],"priority":"bogus","selector":{"site":"prod","labels":{"role":"web"}},"mode":"any"}`,
			PreviewView{Mode: "any", Matched: 2, Online: 1, Offline: 1}, []string{"p1", "p3"}},
		{"capability", `{"selector":{"capability":"sleep"}}`,
			PreviewView{Mode: "all", Matched: 1, Stale: 1}, []string{"p2"}},
		{"ids plus selector, deduplicated", `{"agent_targets":["l1","p1","p1"],"selector":{"site":"lab"}}`,
			PreviewView{Mode: "all", Matched: 3, Online: 3}, []string{"l1", "liar", "p1"}},
		{"reported label is not trusted", `{"selector":{"site":"prod","labels":{"role":"web"}},"verb":"echo"}`,
			PreviewView{Mode: "all", Matched: 2, Online: 1, Offline: 1}, []string{"p1", "p3"}},
		{"no match", `{"selector":{"site":"nowhere"}}`,
			PreviewView{Mode: "all"}, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands/preview", tc.body)
			require.Equal(t, http.StatusOK, w.Code, w.Body.String())
			got := decode[PreviewView](t, w)
			ids := []string{}
			for _, ag := range got.Agents {
				ids = append(ids, ag.ID)
				require.Equal(t, "host-"+ag.ID, ag.Hostname)
			}
			require.Equal(t, tc.wantIDs, ids)
			got.Agents = nil
			require.Equal(t, tc.want, got)
		})
	}
	w := a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands/preview", `{"selector":{"site":"prod"}}`)
	states := map[string]string{}
	for _, ag := range decode[PreviewView](t, w).Agents {
		states[ag.ID] = ag.Status
		require.Equal(t, "prod", ag.Site)
	}
	require.Equal(t, map[string]string{"p1": StateOnline, "p2": StateStale, "p3": StateOffline}, states)

	// Nothing was stored.
	cmds, _, err := a.st.ListCommands(ctx, store.CommandFilter{Page: store.Page{Limit: 10}})
	require.NoError(t, err)
	require.Empty(t, cmds)
}

func TestCommandPreviewRefusals(t *testing.T) {
	a := newReadAPI(t, store.SQLitePrefix+filepath.Join(t.TempDir(), "v.db"), bus.NewMemory(), Config{MaxTargets: 3})
	a.agent("a1", "prod", "gw1", []string{"echo"}, nil)
	cases := []struct {
		name   string
		role   auth.Role
		body   string
		code   int
		fields []string
	}{
		{"anonymous", "", `{"selector":{"site":"prod"}}`, http.StatusUnauthorized, nil},
		{"viewer", auth.RoleViewer, `{"selector":{"site":"prod"}}`, http.StatusForbidden, nil},
		{"no targeting", auth.RoleOperator, `{"verb":"echo"}`, http.StatusBadRequest, []string{"agent_targets"}},
		{"empty selector", auth.RoleOperator, `{"selector":{}}`, http.StatusBadRequest, []string{"agent_targets"}},
		{"bad mode", auth.RoleOperator, `{"selector":{"site":"prod"},"mode":"some"}`, http.StatusBadRequest, []string{"mode"}},
		{"unknown field", auth.RoleOperator, `{"selector":{"site":"prod"},"dry_run":true}`, http.StatusBadRequest, []string{"body"}},
		{"bad id", auth.RoleOperator, `{"agent_targets":["../x"]}`, http.StatusBadRequest, []string{"agent_targets[0]"}},
		{"too many ids", auth.RoleOperator, `{"agent_targets":["a","b","c","d"]}`, http.StatusBadRequest, []string{"agent_targets"}},
		{"long site", auth.RoleOperator, `{"selector":{"site":"` + strings.Repeat("s", 300) + `"}}`, http.StatusBadRequest, []string{"selector.site"}},
		{"unknown id", auth.RoleOperator, `{"agent_targets":["a1","ghost"]}`, http.StatusUnprocessableEntity, []string{"agent_targets"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := a.do(tc.role, http.MethodPost, "/api/v1/commands/preview", tc.body)
			got := problemFields(t, w, tc.code)
			if tc.fields != nil {
				require.Equal(t, tc.fields, got)
			}
		})
	}
}

// TestCommandPreviewTruncates: the counts cover every match, the list at
// most 100 agents.
func TestCommandPreviewTruncates(t *testing.T) {
	a := newReadAPI(t, store.SQLitePrefix+filepath.Join(t.TempDir(), "v.db"), bus.NewMemory(), Config{})
	ctx := context.Background()
	for i := range 105 {
		require.NoError(t, a.st.MarkAgentOnline(ctx, store.AgentSession{
			ID: fmt.Sprintf("t%03d", i), Capabilities: []string{"echo"}, GatewayID: "gw1", SessionID: fmt.Sprintf("s%d", i), At: time.Now(),
		}))
	}
	w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/commands/preview", `{"selector":{"capability":"echo"}}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v := decode[PreviewView](t, w)
	require.Equal(t, 105, v.Matched)
	require.Equal(t, 105, v.Online)
	require.Len(t, v.Agents, maxPreviewAgents)
	require.True(t, v.AgentsTruncated)
	require.Equal(t, "t000", v.Agents[0].ID)
	require.Equal(t, "t099", v.Agents[99].ID)
}
