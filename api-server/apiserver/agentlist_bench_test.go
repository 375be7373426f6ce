package apiserver

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// insertBenchAgents registers n agents the way the bench's api scenario does
// (bench/runner/api.go): agentsim's fields, two labels, five capabilities.
func insertBenchAgents(tb testing.TB, url string, n int) {
	tb.Helper()
	db, err := sql.Open("pgx", url)
	require.NoError(tb, err)
	defer db.Close()
	_, err = db.ExecContext(context.Background(), `INSERT INTO agents (id, status, site, version, hostname, os, arch, capabilities, labels,
  gateway_id, session_id, health_status, uptime_s, connected_at, last_seen_at,
  reported_site, reported_labels, reported_capabilities, attributes_source)
SELECT id, 'offline', site, '0.1.0-sim', id, 'linux', 'amd64', caps, labels,
  'bench-agent-gateway', '', 'healthy', i * 10, now(), now(), site, labels, caps, 'enrollment'
FROM generate_series(0, $1 - 1) AS i,
  LATERAL (SELECT 'api-' || lpad(i::text, 5, '0') AS id, 'site-' || (i % 10) AS site,
    '["echo","sleep","fail","ping","shell"]'::jsonb AS caps, jsonb_build_object('env', 'bench', 'rack', 'r' || (i % 40)) AS labels) AS v`, n)
	require.NoError(tb, err)
	_, err = db.ExecContext(context.Background(), `ANALYZE agents`)
	require.NoError(tb, err)
}

// BenchmarkAgentsList serves the bench's request, GET /agents?limit=100 with
// 10,000 agents in Postgres, and one agent's detail, over a real HTTP server,
// with and without the read cache (client and server in this process: ns/op,
// B/op and allocs/op include the client's share).
//
//	VIWORKS_REQUIRE_SERVICES=1 go test -run '^$' -bench AgentsList -benchmem -count 5 ./apiserver/
func BenchmarkAgentsList(b *testing.B) {
	url := storetest.MigratedPostgres(b)
	insertBenchAgents(b, url, 10_000)
	for _, server := range []struct {
		name string
		cfg  Config
	}{
		{"cached", Config{}},
		{"uncached", Config{ReadCacheTTL: -1}},
	} {
		srv, token := newBenchAPI(b, url, server.cfg)
		hs := httptest.NewServer(srv.Handler())
		b.Cleanup(hs.Close)
		for _, tc := range []struct{ name, path string }{
			{"list100", "/api/v1/agents?limit=100"},
			{"get", "/api/v1/agents/api-04242"},
		} {
			b.Run(server.name+"/"+tc.name, func(b *testing.B) {
				req, err := http.NewRequest(http.MethodGet, hs.URL+tc.path, nil)
				require.NoError(b, err)
				req.Header.Set("Authorization", "Bearer "+token)
				b.ReportAllocs()
				for b.Loop() {
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		}
	}
}

// newBenchAPI is an API on the store at url with a viewer's token, logging
// nothing.
func newBenchAPI(tb testing.TB, url string, cfg Config) (*Server, string) {
	tb.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url, MaxConns: 8})
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = st.Close() })
	jwt, err := auth.NewJWT(auth.Config{Secret: []byte(strings.Repeat("k", 48)), Issuer: "viworks-test", Audience: "viworks-api"})
	require.NoError(tb, err)
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := New(st, bus.NewMemory(), jwt, prometheus.NewRegistry(), log, cfg)
	require.NoError(tb, err)
	tok, err := jwt.Issue("viewer-user", auth.RoleViewer, time.Hour)
	require.NoError(tb, err)
	return srv, tok
}
