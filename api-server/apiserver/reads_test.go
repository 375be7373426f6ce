package apiserver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// readAPI is an API on a real, migrated database of one dialect.
type readAPI struct {
	*alertAPI
}

var readDatabases = map[string]func(t *testing.T) string{
	store.Postgres: func(t *testing.T) string { return storetest.MigratedPostgres(t) },
	store.SQLite: func(t *testing.T) string {
		return store.SQLitePrefix + filepath.Join(t.TempDir(), "viworks.db")
	},
}

// eachDB runs fn against an API on Postgres and on SQLite.
func eachDB(t *testing.T, fn func(t *testing.T, a *readAPI)) {
	for name, newDB := range readDatabases {
		t.Run(name, func(t *testing.T) {
			fn(t, newReadAPI(t, newDB(t), bus.NewMemory(), Config{}))
		})
	}
}

func newReadAPI(t *testing.T, dbURL string, b bus.Bus, cfg Config) *readAPI {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: dbURL, MaxConns: 4, ConnectTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	jwt, err := auth.NewJWT(auth.Config{Secret: []byte(strings.Repeat("k", 48)), Issuer: "viworks-test", Audience: "viworks-api"})
	require.NoError(t, err)
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := New(st, b, jwt, prometheus.NewRegistry(), log, cfg)
	require.NoError(t, err)
	a := &alertAPI{t: t, srv: srv, st: st, tokens: map[auth.Role]string{}}
	for _, r := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
		tok, err := jwt.Issue(string(r)+"-user", r, time.Hour)
		require.NoError(t, err)
		a.tokens[r] = tok
	}
	return &readAPI{a}
}

func (a *readAPI) get(path string) *httptest.ResponseRecorder {
	a.t.Helper()
	return a.do(auth.RoleViewer, http.MethodGet, path, "")
}

// agent brings an agent online and gives it site and labels as an admin
// does (PATCH): what it reports in HELLO is not trusted.
func (a *readAPI) agent(id, site, gw string, caps []string, labels map[string]string) {
	a.t.Helper()
	require.NoError(a.t, a.st.MarkAgentOnline(context.Background(), store.AgentSession{
		ID: id, Site: site, Version: "1.2.3", Hostname: "host-" + id, Capabilities: caps, Labels: labels,
		GatewayID: gw, SessionID: "s-" + id, At: time.Now(),
	}))
	body, err := json.Marshal(map[string]any{"site": site, "labels": labels})
	require.NoError(a.t, err)
	w := a.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/"+url.PathEscape(id), string(body))
	require.Equal(a.t, http.StatusOK, w.Code, w.Body.String())
}

func agentIDs(t *testing.T, w *httptest.ResponseRecorder) []string {
	t.Helper()
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	l := decode[List[AgentView]](t, w)
	out := []string{}
	for _, v := range l.Items {
		out = append(out, v.ID)
	}
	return out
}

func TestReadRoutesRoles(t *testing.T) {
	a := newReadAPI(t, store.SQLitePrefix+filepath.Join(t.TempDir(), "v.db"), bus.NewMemory(), Config{})
	a.agent("a1", "lab", "gw1", nil, nil)
	for _, path := range []string{
		"/api/v1/agents", "/api/v1/agents/a1", "/api/v1/agents/a1/health", "/api/v1/agents/a1/telemetry",
		"/api/v1/commands", "/api/v1/status", "/api/v1/metrics",
	} {
		problemFields(t, a.do("", http.MethodGet, path, ""), http.StatusUnauthorized)
		for _, role := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
			w := a.do(role, http.MethodGet, path, "")
			require.Equal(t, http.StatusOK, w.Code, path+": "+w.Body.String())
		}
	}
	for _, path := range []string{"/api/v1/health/database", "/api/v1/health/redis"} {
		w := a.do("", http.MethodGet, path, "")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	}
}

func TestAgentsListAPI(t *testing.T) { eachDB(t, testAgentsListAPI) }

func testAgentsListAPI(t *testing.T, a *readAPI) {
	a.agent("web-1", "prod", "gw1", []string{"echo", "create_user"}, map[string]string{"role": "web", "tier": "1"})
	a.agent("web-2", "prod", "gw1", []string{"echo"}, map[string]string{"role": "web", "tier": "2"})
	a.agent("db-1", "lab", "gw2", []string{"create_user"}, map[string]string{"role": "db"})
	a.agent("web_3", "lab", "gw2", nil, nil)
	_, err := a.st.MarkAgentOffline(context.Background(), "web-2", "s-web-2", time.Now())
	require.NoError(t, err)

	cases := []struct {
		query string
		want  []string
	}{
		{"", []string{"db-1", "web-1", "web-2", "web_3"}},
		{"status=online", []string{"db-1", "web-1", "web_3"}},
		{"status=offline", []string{"web-2"}},
		{"site=prod", []string{"web-1", "web-2"}},
		{"label=role=web", []string{"web-1", "web-2"}},
		{"label=role=web&label=tier=2", []string{"web-2"}},
		{"label=role%3Dweb&label=tier%3D2", []string{"web-2"}},
		{"label=role=", []string{}},
		{"capability=create_user", []string{"db-1", "web-1"}},
		{"q=web-", []string{"web-1", "web-2"}},
		{"q=web_", []string{"web_3"}},
		{"q=WEB", []string{}},
		{"site=prod&status=online&capability=echo&q=web", []string{"web-1"}},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, agentIDs(t, a.get("/api/v1/agents?"+tc.query)), tc.query)
	}

	// Pagination across pages, with a filter.
	var seen []string
	path := "/api/v1/agents?limit=1&label=role=web"
	for range 5 {
		w := a.get(path)
		require.Equal(t, http.StatusOK, w.Code)
		l := decode[List[AgentView]](t, w)
		for _, v := range l.Items {
			seen = append(seen, v.ID)
		}
		if l.NextCursor == nil {
			break
		}
		path = "/api/v1/agents?limit=1&label=role=web&cursor=" + url.QueryEscape(*l.NextCursor)
	}
	require.Equal(t, []string{"web-1", "web-2"}, seen)

	many := strings.Repeat("&label=k=v", 33)
	bad := []struct{ query, field string }{
		{"status=busy", "status"},
		{"label=novalue", "label"},
		{"label==v", "label"},
		{"label=k=v&label=k=w", "label"},
		{strings.TrimPrefix(many, "&"), "label"},
		{"label=" + strings.Repeat("k", 257) + "=v", "label"},
		{"site=" + strings.Repeat("s", 257), "site"},
		{"capability=" + strings.Repeat("c", 257), "capability"},
		{"q=", "q"},
		{"q=a%20b", "q"},
		{"q=" + strings.Repeat("q", 129), "q"},
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"cursor=" + strings.Repeat("c", 257), "cursor"},
		{"cursor=garbage", "cursor"},
		{"cursor=web-1", "cursor"}, // an id is not a cursor: only next_cursor values are
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("agent|a b")), "cursor"},
		{"sort=id", "sort"},
		{"stauts=online", "stauts"},
	}
	for _, tc := range bad {
		require.Equal(t, []string{tc.field}, problemFields(t, a.get("/api/v1/agents?"+tc.query), http.StatusBadRequest), tc.query)
	}
}

func TestAgentDetailAndHealthAPI(t *testing.T) { eachDB(t, testAgentDetailAndHealthAPI) }

func testAgentDetailAndHealthAPI(t *testing.T, a *readAPI) {
	ctx := context.Background()
	a.agent("a1", "prod", "gw1", []string{"echo"}, map[string]string{"role": "web"})
	a.agent("a2", "prod", "gw1", nil, nil)
	a.agent("a3", "prod", "gw1", nil, nil)
	now := time.Now()
	require.NoError(t, a.st.TouchAgents(ctx, []store.HealthUpdate{
		{AgentID: "a1", Status: "healthy", UptimeS: 42, At: now},
		{AgentID: "a2", Status: "degraded", UptimeS: 7, At: now.Add(-10 * time.Minute)}, // silent since
	}))
	_, err := a.st.MarkAgentOffline(ctx, "a3", "s-a3", now)
	require.NoError(t, err)

	w := a.get("/api/v1/agents/a1")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	var raw map[string]any
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &raw))
	for _, k := range []string{"id", "status", "site", "version", "capabilities", "labels", "hostname", "gateway_id", "connected_at", "last_seen_at", "health"} {
		require.Contains(t, raw, k)
	}
	v := decode[AgentView](t, w)
	require.Equal(t, "a1", v.ID)
	require.Equal(t, "online", v.Status)
	require.Equal(t, []string{"echo"}, v.Capabilities)
	require.Equal(t, map[string]string{"role": "web"}, v.Labels)
	require.Equal(t, AgentHealth{Status: "healthy", UptimeS: 42}, v.Health)
	require.Equal(t, "gw1", v.GatewayID)

	states := map[string]string{"a1": StateOnline, "a2": StateStale, "a3": StateOffline}
	for id, state := range states {
		w := a.get("/api/v1/agents/" + id + "/health")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		h := decode[AgentHealthView](t, w)
		require.Equal(t, state, h.State, id)
		require.Equal(t, id, h.AgentID)
		require.Equal(t, 30.0, h.HeartbeatIntervalS)
		require.Equal(t, config.Default().StaleAfter().Seconds(), h.StaleAfterS) // the role default is the binaries'
		require.NotNil(t, h.LastSeenAt)
		require.NotNil(t, h.SecondsSinceSeen)
	}
	h := decode[AgentHealthView](t, a.get("/api/v1/agents/a2/health"))
	require.Equal(t, AgentHealth{Status: "degraded", UptimeS: 7}, h.Health)
	require.InDelta(t, 600, *h.SecondsSinceSeen, 5)

	// Ids with every punctuation of the id alphabet.
	a.agent("site:agent-7.eu_1", "prod", "gw1", nil, nil)
	for _, path := range []string{"/api/v1/agents/site:agent-7.eu_1", "/api/v1/agents/site:agent-7.eu_1/health"} {
		w := a.get(path)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.Contains(t, w.Body.String(), `"site:agent-7.eu_1"`)
	}

	// Outside the alphabet no agent can exist: a slash, a right-to-left
	// override, a path that climbs.
	for _, id := range []string{"spiffe://site/agent:7", "gw\u202e1", "../../etc", ".."} {
		problemFields(t, a.get("/api/v1/agents/"+url.PathEscape(id)), http.StatusNotFound)
	}
	for _, path := range []string{"/api/v1/agents/nope", "/api/v1/agents/nope/health", "/api/v1/agents/nope/telemetry", "/api/v1/agents/" + strings.Repeat("x", 129)} {
		problemFields(t, a.get(path), http.StatusNotFound)
	}
}

func TestAgentTelemetryAPI(t *testing.T) { eachDB(t, testAgentTelemetryAPI) }

func testAgentTelemetryAPI(t *testing.T, a *readAPI) {
	ctx := context.Background()
	a.agent("a1", "prod", "gw1", nil, nil)
	a.agent("a2", "prod", "gw1", nil, nil)
	base := time.Date(2026, 3, 4, 5, 0, 0, 0, time.UTC)
	var samples []store.TelemetrySample
	for i := range 6 { // every 20 s for 2 minutes: cpu 10, 20, ..., 60
		samples = append(samples, store.TelemetrySample{AgentID: "a1", TS: base.Add(time.Duration(i) * 20 * time.Second), ReceivedAt: base,
			Metrics: store.JSON(fmt.Sprintf(`{"cpu":%d,"mem":%d}`, (i+1)*10, 100-i))})
		samples = append(samples, store.TelemetrySample{AgentID: "a2", TS: base.Add(time.Duration(i) * 20 * time.Second), ReceivedAt: base, Metrics: store.JSON(`{"cpu":1000}`)})
	}
	require.NoError(t, a.st.InsertTelemetry(ctx, samples))

	from, to := base.Format(time.RFC3339), base.Add(2*time.Minute).Format(time.RFC3339)
	w := a.get("/api/v1/agents/a1/telemetry?from=" + from + "&to=" + to + "&step=1m")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v := decode[TelemetryView](t, w)
	require.Equal(t, "a1", v.AgentID)
	require.Equal(t, int64(60), v.StepSeconds)
	require.True(t, v.From.Equal(base))
	require.Equal(t, []TelemetrySeriesView{
		{Metric: "cpu", Points: []TelemetryPointView{
			{T: base, Avg: 20, Max: 30, Count: 3},
			{T: base.Add(time.Minute), Avg: 50, Max: 60, Count: 3},
		}},
		{Metric: "mem", Points: []TelemetryPointView{
			{T: base, Avg: 99, Max: 100, Count: 3},
			{T: base.Add(time.Minute), Avg: 96, Max: 97, Count: 3},
		}},
	}, v.Series)

	// One metric, step in seconds, Unix-second times.
	w = a.get(fmt.Sprintf("/api/v1/agents/a1/telemetry?from=%d&to=%d&step=40&metric=cpu", base.Unix(), base.Add(2*time.Minute).Unix()))
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v = decode[TelemetryView](t, w)
	require.Equal(t, []TelemetrySeriesView{{Metric: "cpu", Points: []TelemetryPointView{
		{T: base, Avg: 15, Max: 20, Count: 2},
		{T: base.Add(40 * time.Second), Avg: 35, Max: 40, Count: 2},
		{T: base.Add(80 * time.Second), Avg: 55, Max: 60, Count: 2},
	}}}, v.Series)

	// Defaults: the last hour, an automatic step (15 s gives 240 buckets).
	w = a.get("/api/v1/agents/a1/telemetry")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v = decode[TelemetryView](t, w)
	require.Equal(t, int64(15), v.StepSeconds)
	require.Equal(t, time.Hour, v.To.Sub(v.From))
	require.WithinDuration(t, time.Now(), v.To, 5*time.Second)
	require.Equal(t, []TelemetrySeriesView{}, v.Series)
	// Automatic step over 30 days: 3h (240 buckets).
	v = decode[TelemetryView](t, a.get("/api/v1/agents/a1/telemetry?from="+base.Add(-30*24*time.Hour).Format(time.RFC3339)+"&to="+base.Format(time.RFC3339)))
	require.Equal(t, int64(3*3600), v.StepSeconds)

	bad := []struct{ query, field string }{
		{"from=yesterday", "from"},
		{"to=2026-13-01T00:00:00Z", "to"},
		{"from=" + to + "&to=" + from, "from"},
		{"from=" + from + "&to=" + from, "from"},
		{"from=2020-01-01T00:00:00Z&to=2022-01-01T00:00:00Z", "from"},
		{"step=0", "step"},
		{"step=-5", "step"},
		{"step=1.5s", "step"},
		{"step=500ms", "step"},
		{"step=fast", "step"},
		{"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&step=1s", "step"}, // 86,400 buckets
		{"metric=a%22b", "metric"},
		{"metric=" + strings.Repeat("m", 129), "metric"},
		{strings.TrimPrefix(strings.Repeat("&metric=m", 33), "&"), "metric"},
	}
	for _, tc := range bad {
		require.Equal(t, []string{tc.field}, problemFields(t, a.get("/api/v1/agents/a1/telemetry?"+tc.query), http.StatusBadRequest), tc.query)
	}
	// The bucket bound is inclusive: 10,000 buckets are allowed.
	w = a.get("/api/v1/agents/a1/telemetry?from=2026-01-01T00:00:00Z&to=2026-01-01T02:46:40Z&step=1s")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
}

func TestCommandsListAPI(t *testing.T) { eachDB(t, testCommandsListAPI) }

func testCommandsListAPI(t *testing.T, a *readAPI) {
	a.agent("a1", "prod", "gw1", []string{"echo", "create_panel_user"}, nil)
	a.agent("a2", "prod", "gw1", []string{"echo", "create_panel_user"}, nil)
	create := func(role auth.Role, body string) CommandView {
		w := a.do(role, http.MethodPost, "/api/v1/commands", body)
		require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
		return decode[CommandView](t, w)
	}
	c1 := create(auth.RoleOperator, `{"verb":"create_panel_user","args":{"username":"u","password":"hunter2","nested":{"api_token":"t0k"}},"agent_targets":["a1"]}`)
	c2 := create(auth.RoleAdmin, `{"verb":"echo","agent_targets":["a2"]}`)
	c3 := create(auth.RoleOperator, `{"verb":"echo","agent_targets":["a1","a2"],"priority":"high"}`)
	require.Equal(t, http.StatusOK, a.do(auth.RoleOperator, http.MethodDelete, "/api/v1/commands/"+c2.ID, "").Code)

	list := func(query string) List[CommandSummaryView] {
		t.Helper()
		w := a.get("/api/v1/commands?" + query)
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		require.NotContains(t, w.Body.String(), "hunter2")
		require.NotContains(t, w.Body.String(), "t0k")
		return decode[List[CommandSummaryView]](t, w)
	}
	cmdIDs := func(l List[CommandSummaryView]) []string {
		out := []string{}
		for _, c := range l.Items {
			out = append(out, c.ID)
		}
		return out
	}
	all := list("")
	require.Equal(t, []string{c3.ID, c2.ID, c1.ID}, cmdIDs(all))
	require.Nil(t, all.NextCursor)
	first := all.Items[2]
	require.JSONEq(t, `{"username":"u","password":"REDACTED","nested":{"api_token":"REDACTED"}}`, string(first.Args))
	require.Equal(t, "operator-user", first.CreatedBy)
	require.Equal(t, map[string]int{"queued": 1}, first.Counts)
	require.Equal(t, "normal", first.Priority)
	require.Equal(t, map[string]int{"queued": 2}, all.Items[0].Counts)
	require.Equal(t, "high", all.Items[0].Priority)
	require.Equal(t, map[string]int{"cancelled": 1}, all.Items[1].Counts)
	require.Equal(t, "cancelled", all.Items[1].Status)

	fromC2 := url.QueryEscape(c2.CreatedAt.Format(time.RFC3339Nano))
	cases := []struct {
		query string
		want  []string
	}{
		{"status=cancelled", []string{c2.ID}},
		{"status=queued", []string{c3.ID, c1.ID}},
		{"verb=echo", []string{c3.ID, c2.ID}},
		{"agent=a1", []string{c3.ID, c1.ID}},
		{"agent=a2&verb=echo", []string{c3.ID, c2.ID}},
		{"agent=nobody", []string{}},
		{"created_by=admin-user", []string{c2.ID}},
		{"from=" + fromC2, []string{c3.ID, c2.ID}},
		{"to=" + fromC2, []string{c1.ID}},
		{"from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z", []string{}},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, cmdIDs(list(tc.query)), tc.query)
	}

	// Pages of one.
	var seen []string
	query := "limit=1&verb=echo"
	for range 4 {
		l := list(query)
		seen = append(seen, cmdIDs(l)...)
		if l.NextCursor == nil {
			break
		}
		query = "limit=1&verb=echo&cursor=" + url.QueryEscape(*l.NextCursor)
	}
	require.Equal(t, []string{c3.ID, c2.ID}, seen)

	bad := []struct{ query, field string }{
		{"status=done", "status"},
		{"status=dispatched", "status"},
		{"verb=Echo", "verb"},
		{"agent=", "agent"},
		{"agent=a%20b", "agent"},
		{"created_by=" + strings.Repeat("u", 257), "created_by"},
		{"from=soon", "from"},
		{"to=later", "to"},
		{"from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"},
		{"limit=-1", "limit"},
		{"cursor=not-a-cursor", "cursor"},
		{"cursor=" + strings.Repeat("c", 513), "cursor"},
	}
	for _, tc := range bad {
		require.Equal(t, []string{tc.field}, problemFields(t, a.get("/api/v1/commands?"+tc.query), http.StatusBadRequest), tc.query)
	}
}

func TestStatusAPI(t *testing.T) { eachDB(t, testStatusAPI) }

func testStatusAPI(t *testing.T, a *readAPI) {
	ctx := context.Background()
	now := time.Now().UTC()
	up := func(role, id string, seen time.Time, leader bool) {
		require.NoError(t, a.st.UpsertServiceInstance(ctx, store.ServiceInstance{Role: role, ID: id, Version: "v9", Hostname: "h-" + id, Leader: leader, StartedAt: now.Add(-time.Hour), LastSeenAt: seen}))
	}
	up(store.RoleGateway, "gw1", now, false)
	up(store.RoleGateway, "gw-old", now.Add(-time.Minute), false) // not seen in 30 s
	up(store.RoleScheduler, "s1", now, false)
	up(store.RoleScheduler, "s2", now, true)
	up(store.RoleAPIServer, "api1", now, false)
	a.agent("a1", "x", "gw1", []string{"echo"}, nil)
	a.agent("a2", "x", "gw1", []string{"echo"}, nil)
	a.agent("a3", "x", "gw-dead", []string{"echo"}, nil)
	require.Equal(t, http.StatusAccepted, a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", `{"verb":"echo","agent_targets":["a1","a2"],"priority":"critical"}`).Code)
	require.Equal(t, http.StatusAccepted, a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", `{"verb":"echo","agent_targets":["a3"],"priority":"low"}`).Code)

	w := a.get("/api/v1/status")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v := decode[StatusView](t, w)
	require.Len(t, v.Gateways, 2)
	require.Equal(t, "gw1", v.Gateways[0].ID)
	require.True(t, v.Gateways[0].Live)
	require.Equal(t, int64(2), v.Gateways[0].AgentsOnline)
	require.Equal(t, "v9", v.Gateways[0].Version)
	require.Equal(t, GatewayView{InstanceView: InstanceView{ID: "gw-dead"}, Live: false, AgentsOnline: 1}, v.Gateways[1])
	require.Len(t, v.Schedulers, 2)
	require.False(t, v.Schedulers[0].Leader)
	require.True(t, v.Schedulers[1].Leader)
	require.True(t, v.LeaderElected)
	require.Len(t, v.APIServers, 1)
	require.Equal(t, "api1", v.APIServers[0].ID)
	require.Equal(t, QueueDepthView{Low: 1, Critical: 2, Total: 3}, v.QueueDepth)
	require.Equal(t, int64(3), v.AgentsOnline)
	require.Equal(t, 30.0, v.SeenWithinS)
}

func TestMetricsSummaryAPI(t *testing.T) { eachDB(t, testMetricsSummaryAPI) }

func testMetricsSummaryAPI(t *testing.T, a *readAPI) {
	ctx := context.Background()
	a.agent("a1", "x", "gw1", []string{"echo"}, nil)
	a.agent("a2", "x", "gw1", []string{"echo"}, nil)
	_, err := a.st.MarkAgentOffline(ctx, "a2", "s-a2", time.Now())
	require.NoError(t, err)

	w := a.get("/api/v1/metrics")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	v := decode[SummaryView](t, w)
	require.Equal(t, int64(1), v.Agents.Online)
	require.Equal(t, int64(2), v.Agents.Total)
	require.Zero(t, v.DispatchLatency.Samples)
	require.Equal(t, map[string]int64{}, v.Commands.ByStatus)

	w = a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", `{"verb":"echo","agent_targets":["a1"]}`)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	cmd := decode[CommandView](t, w)
	require.Equal(t, http.StatusAccepted, a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", `{"verb":"echo","agent_targets":["a2"]}`).Code)
	// Dispatch the first 1.5 s after its creation and finish it.
	due, _, err := a.st.ClaimDue(ctx, store.ClaimOptions{Limit: 1, AckTimeout: time.Minute, Now: cmd.CreatedAt.Add(1500 * time.Millisecond)},
		func(_ context.Context, ids []string) (map[string]string, error) {
			return map[string]string{"a1": "gw1"}, nil
		})
	require.NoError(t, err)
	require.Len(t, due, 1)
	_, rec, err := a.st.RecordResult(ctx, store.Result{ExecutionID: due[0].ExecutionID, AgentID: "a1", Status: store.ExecSucceeded, FinishedAt: time.Now()})
	require.NoError(t, err)
	require.True(t, rec)

	v = decode[SummaryView](t, a.get("/api/v1/metrics"))
	require.Equal(t, map[string]int64{"succeeded": 1, "queued": 1}, v.Commands.ByStatus)
	require.Equal(t, int64(2), v.Commands.Total)
	require.Equal(t, int64(1), v.Executions.FinishedLast1m)
	require.Equal(t, int64(1), v.Executions.FinishedLast5m)
	require.InDelta(t, 1.0/60, v.Executions.ThroughputPerS1m, 1e-9)
	require.InDelta(t, 1.0/300, v.Executions.ThroughputPerS5m, 1e-9)
	require.Equal(t, QueueDepthView{Normal: 1, Total: 1}, v.Executions.QueueDepth)
	require.Equal(t, int64(1), v.DispatchLatency.Samples)
	require.InDelta(t, 1500, v.DispatchLatency.P50Ms, 50)
	require.InDelta(t, 1500, v.DispatchLatency.P99Ms, 50)
	require.Equal(t, 300.0, v.DispatchLatency.WindowS)
}

// tcpProxy forwards a local port to target until closed; closing it makes the
// service behind it unreachable (connections cut, the port refused).
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, d)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(d, c); _ = d.Close() }()
			go func() { _, _ = io.Copy(c, d); _ = c.Close() }()
		}
	}()
	t.Cleanup(p.Close)
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func TestDependencyHealthAPI(t *testing.T) {
	pgURL, err := url.Parse(storetest.MigratedPostgres(t))
	require.NoError(t, err)
	redisURL, prefix := testenv.Redis(t)
	rURL, err := url.Parse(redisURL)
	require.NoError(t, err)

	pgProxy := newTCPProxy(t, pgURL.Host)
	redisProxy := newTCPProxy(t, rURL.Host)
	pgURL.Host, rURL.Host = pgProxy.Addr(), redisProxy.Addr()
	ctx := context.Background()
	b, err := bus.NewRedis(ctx, bus.RedisConfig{URL: rURL.String(), KeyPrefix: prefix, DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	a := newReadAPI(t, pgURL.String(), b, Config{HealthTimeout: 500 * time.Millisecond})

	check := func(path, name string, code int, status string) {
		t.Helper()
		start := time.Now()
		w := a.do("", http.MethodGet, path, "")
		require.Less(t, time.Since(start), 3*time.Second, "health checks are bounded")
		require.Equal(t, code, w.Code, w.Body.String())
		require.Equal(t, "application/json; charset=utf-8", w.Header().Get("Content-Type"))
		var got map[string]any
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &got))
		require.Equal(t, name, got["check"])
		require.Equal(t, status, got["status"])
		require.Len(t, got, 3, "check, status and time only: %s", w.Body.String())
		for _, leak := range []string{"127.0.0.1", "localhost", pgProxy.Addr(), redisProxy.Addr(), "dial", "refused", "EOF", "error", "postgres", "redis:"} {
			require.NotContains(t, w.Body.String(), leak)
		}
	}
	check("/api/v1/health/database", "database", http.StatusOK, "ok")
	check("/api/v1/health/redis", "redis", http.StatusOK, "ok")

	pgProxy.Close()
	check("/api/v1/health/database", "database", http.StatusServiceUnavailable, "unavailable")
	check("/api/v1/health/redis", "redis", http.StatusOK, "ok")

	redisProxy.Close()
	check("/api/v1/health/redis", "redis", http.StatusServiceUnavailable, "unavailable")
}
