package apiserver

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// agentView is the reference the hand-written JSON is compared with: what
// the handlers gave c.JSON before.
func agentView(a store.Agent) AgentView {
	return AgentView{
		ID: a.ID, Status: a.Status, Site: a.Site, Version: a.Version, Capabilities: nonNilList(a.Capabilities), Labels: nonNilMap(a.Labels),
		AttributesSource: a.AttributesSource, ReportedSite: a.ReportedSite, ReportedLabels: nonNilMap(a.ReportedLabels),
		ReportedCapabilities: nonNilList(a.ReportedCapabilities),
		Hostname:             a.Hostname, OS: a.OS, Arch: a.Arch, GatewayID: a.GatewayID,
		ConnectedAt: a.ConnectedAt, LastSeenAt: a.LastSeenAt,
		Health: AgentHealth{Status: a.HealthStatus, UptimeS: a.UptimeS},
	}
}

func nonNilMap(m store.StringMap) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// variedAgents covers what the hand-written JSON must write as encoding/json
// does: nulls and empty collections, labels to sort, unicode, HTML
// characters, control characters, U+2028, invalid UTF-8, odd times.
func variedAgents() []store.Agent {
	at := time.Date(2026, 12, 3, 4, 5, 6, 789000000, time.UTC)
	whole := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", -(3*3600+30*60)))
	nano := time.Date(1999, 12, 31, 23, 59, 59, 1, time.FixedZone("y", 5*3600))
	return []store.Agent{
		{ID: "bare"},
		{ID: "web-1", Status: store.AgentOnline, Site: "prod", Version: "1.2.3", Hostname: "web-1.example", OS: "linux", Arch: "amd64",
			Capabilities: store.StringList{"echo", "create_user"}, Labels: store.StringMap{"tier": "1", "role": "web", "Zone": "a", "": "empty"},
			GatewayID: "gw-1", HealthStatus: "healthy", UptimeS: 123456789, ConnectedAt: &at, LastSeenAt: &whole,
			ReportedSite: "prod", ReportedLabels: store.StringMap{}, ReportedCapabilities: store.StringList{}, AttributesSource: store.AttributesFromAdmin},
		{ID: "ünï/cødé", Status: store.AgentOffline, Site: "東京 <b>&amp;</b>", Version: "v\"quoted\" \\ back",
			Hostname: "tab\there\nnew\rret\bbs\fff\x00nul\x1funit\x7fdel", OS: "\u2028line\u2029para", Arch: "bad\xffutf8\xc3",
			Capabilities: store.StringList{"", "ça", "😀"}, Labels: store.StringMap{"ключ": "значение", "k<": ">v&", "emoji😀": "\U0001F600"},
			LastSeenAt: &nano, UptimeS: -1, ReportedSite: "reported", ReportedLabels: store.StringMap{"b": "2", "a": "1", "aa": "0"},
			ReportedCapabilities: store.StringList{"shell"}, AttributesSource: store.AttributesFromEnrollment},
	}
}

// The hand-written list and detail are byte for byte what c.JSON wrote.
func TestAgentJSONIsEncodingJSON(t *testing.T) {
	agents := variedAgents()
	for _, next := range []string{"", encodeAgentCursor("web-1")} {
		views := List[AgentView]{Items: []AgentView{}}
		for _, a := range agents {
			views.Items = append(views.Items, agentView(a))
		}
		if next != "" {
			views.NextCursor = &next
		}
		want, err := json.Marshal(views)
		require.NoError(t, err)
		got, err := agentListJSON(agents, next)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	empty, err := agentListJSON(nil, "")
	require.NoError(t, err)
	require.JSONEq(t, `{"items":[],"next_cursor":null}`, string(empty))
	require.Equal(t, `{"items":[],"next_cursor":null}`, string(empty))
	for _, a := range agents {
		want, err := json.Marshal(agentView(a))
		require.NoError(t, err)
		got, err := agentJSON(&a)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	bad := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err = agentJSON(&store.Agent{ID: "x", ConnectedAt: &bad})
	require.ErrorIs(t, err, errJSONTime)
}

// FuzzAgentJSON compares the hand-written JSON with encoding/json on
// arbitrary strings in every kind of field.
func FuzzAgentJSON(f *testing.F) {
	for _, a := range variedAgents() {
		f.Add(a.ID, a.Site, a.Hostname, a.Arch, int64(len(a.OS)))
	}
	f.Add("\u2029", "<>&", "\xed\xa0\x80", "\"\\", int64(-1<<62))
	f.Fuzz(func(t *testing.T, s1, s2, s3, s4 string, ns int64) {
		at := time.Unix(0, ns).UTC()
		a := store.Agent{ID: s1, Site: s2, Hostname: s3, OS: s4, ConnectedAt: &at,
			Capabilities: store.StringList{s1, s3}, Labels: store.StringMap{s1: s2, s3: s4}, ReportedLabels: store.StringMap{s4: s1}}
		want, werr := json.Marshal(agentView(a))
		got, gerr := agentJSON(&a)
		require.Equal(t, werr != nil, gerr != nil, "errors: %v / %v", werr, gerr)
		if werr == nil {
			require.Equal(t, string(want), string(got))
		}
	})
}
