package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

// contract validates real requests and responses against the OpenAPI document
// and remembers which operations answered with a documented success.
type contract struct {
	t      *testing.T
	api    *alertAPI
	router routers.Router
	ok     map[string]bool // "METHOD /path/template" that answered 2xx
}

func newContract(t *testing.T, a *alertAPI) *contract {
	doc, err := OpenAPI()
	require.NoError(t, err)
	doc.Servers = openapi3.Servers{{URL: "http://example.test"}}
	r, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return &contract{t: t, api: a, router: r, ok: map[string]bool{}}
}

// do sends a request as role, validates request and response against the
// document and returns the response.
func (c *contract) do(role auth.Role, method, path string, body any, header ...string) *httptest.ResponseRecorder {
	c.t.Helper()
	var raw []byte
	if body != nil {
		var err error
		raw, err = json.Marshal(body)
		require.NoError(c.t, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, method, "http://example.test"+path, bytes.NewReader(raw))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+c.api.tokens[role])
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := serve(c.t, c.api.srv.Handler(), req)

	route, params, err := c.router.FindRoute(req)
	require.NoError(c.t, err, "%s %s is not in the OpenAPI document", method, path)
	in := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	}
	req.Body = io.NopCloser(bytes.NewReader(raw))
	if w.Code < 400 {
		require.NoError(c.t, openapi3filter.ValidateRequest(ctx, in), "request %s %s", method, path)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: w.Code, Header: w.Header(),
		Body:    io.NopCloser(bytes.NewReader(w.Body.Bytes())),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream")},
	}
	require.NoError(c.t, openapi3filter.ValidateResponse(context.Background(), out),
		"response %d to %s %s does not match the document: %s", w.Code, method, path, w.Body.String())
	if w.Code < 300 {
		c.ok[method+" "+route.Path] = true
	}
	return w
}

// TestOpenAPIDocumentMatchesRoutes: every registered route is documented and
// every documented operation is registered.
func TestOpenAPIDocumentMatchesRoutes(t *testing.T) {
	a := newAlertAPI(t)
	doc, err := OpenAPI()
	require.NoError(t, err)
	var documented, registered []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	for _, r := range a.srv.engine.Routes() {
		registered = append(registered, r.Method+" "+ginToOpenAPI(r.Path))
	}
	sort.Strings(documented)
	sort.Strings(registered)
	require.Equal(t, registered, documented)

	w := serve(t, a.srv.Handler(), httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil))
	require.Equal(t, http.StatusOK, w.Code)
	served, err := openapi3.NewLoader().LoadFromData(w.Body.Bytes())
	require.NoError(t, err)
	require.NoError(t, served.Validate(context.Background()), "the served JSON is a valid OpenAPI 3 document")
}

func ginToOpenAPI(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, ":") {
			parts[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

// TestOpenAPIResponsesValidate drives every endpoint with real requests on a
// real store and validates each request and response against the document
// (kin-openapi), errors included; every operation must have answered a
// documented success at least once.
func TestOpenAPIResponsesValidate(t *testing.T) {
	a := newAlertAPI(t)
	c := newContract(t, a)
	ctx := context.Background()
	for _, id := range []string{"web-1", "web-2"} {
		require.NoError(t, a.st.MarkAgentOnline(ctx, store.AgentSession{
			ID: id, Site: "lab", Capabilities: []string{"echo"}, Labels: map[string]string{"role": "web"},
			GatewayID: "gw-1", SessionID: "s-" + id, At: time.Now(),
		}))
	}

	c.do("", http.MethodGet, "/api/v1/health", nil)
	c.do("", http.MethodGet, "/api/v1/openapi.json", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents?limit=1", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents?status=bogus", nil)
	c.do("", http.MethodGet, "/api/v1/agents", nil)
	for _, id := range []string{"web-1", "web-2"} {
		w := c.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/"+id, map[string]any{"site": "lab", "labels": map[string]any{"role": "web", "gone": nil}})
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	}
	c.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/web-1", map[string]any{"site": 5})
	c.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/nobody", map[string]any{"site": "lab"})
	c.do(auth.RoleOperator, http.MethodPatch, "/api/v1/agents/web-1", map[string]any{"site": "lab"})
	many := map[string]any{}
	for i := range protocol.MaxLabels {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	w := c.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/web-1", map[string]any{"labels": many})
	require.Equal(t, http.StatusUnprocessableEntity, w.Code, "one more than the label limit with role: %s", w.Body.String())
	w = c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents?site=lab&label=role=web&capability=echo&q=web", nil)
	require.Contains(t, w.Body.String(), `"web-2"`)
	w = c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents?label=role=web&label=role=web&sort=id", nil)
	require.Equal(t, []string{"sort"}, problemFields(t, w, http.StatusBadRequest), "sorts are not offered: refused, not ignored")
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents/web-1", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents/nobody", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents/web-1/health", nil)
	require.NoError(t, a.st.InsertTelemetry(ctx, []store.TelemetrySample{
		{AgentID: "web-1", TS: time.Now().Add(-time.Minute), Metrics: store.JSON(`{"cpu_percent": 12.5, "mem_percent": 40}`)},
		{AgentID: "web-1", TS: time.Now().Add(-30 * time.Second), Metrics: store.JSON(`{"cpu_percent": 20, "mem_percent": 41}`)},
	}))
	w = c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents/web-1/telemetry?step=5m&metric=cpu_percent&metric=mem_percent", nil)
	require.Contains(t, w.Body.String(), "cpu_percent")
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents/web-1/telemetry?step=bogus", nil)
	c.do("", http.MethodGet, "/api/v1/health/database", nil)
	c.do("", http.MethodGet, "/api/v1/health/redis", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/status", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/metrics", nil)

	w = c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands",
		map[string]any{"verb": "echo", "args": map[string]string{"message": "hi", "password": "s3cret"}, "agent_targets": []string{"web-1", "web-2"}})
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	var cmd CommandView
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &cmd))
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "echo", "agent_targets": []string{"nobody"}})
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", map[string]any{"verb": ""})
	c.do(auth.RoleViewer, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "echo"})
	w = c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands/preview", map[string]any{"selector": map[string]any{"site": "lab"}})
	require.Contains(t, w.Body.String(), `"web-2"`)
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands/preview", map[string]any{"agent_targets": []string{"nobody"}})
	c.do(auth.RoleViewer, http.MethodPost, "/api/v1/commands/preview", map[string]any{"selector": map[string]any{"site": "lab"}})
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/commands/"+cmd.ID, nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/commands?status=queued&verb=echo&agent=web-1&limit=5", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/commands?status=bogus", nil)
	idem := map[string]any{"verb": "echo", "agent_targets": []string{"web-1"}}
	first := c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", idem, "Idempotency-Key", "retry-1")
	again := c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", idem, "Idempotency-Key", "retry-1")
	require.Equal(t, first.Body.String(), again.Body.String(), "a retry with the same key gets the original answer")
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", map[string]any{"verb": "echo", "agent_targets": []string{"web-2"}}, "Idempotency-Key", "retry-1")
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/commands/not-a-command", nil)
	c.do(auth.RoleOperator, http.MethodDelete, "/api/v1/commands/"+cmd.ID, nil)
	c.do(auth.RoleOperator, http.MethodDelete, "/api/v1/commands/"+cmd.ID, nil) // 409: already final

	exerciseSchedules(t, c)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/events?type=agent.online&type=command.status", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/events?type=nope", nil)

	w = c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/alert-rules",
		map[string]any{"name": "offline", "kind": "agent_offline", "params": map[string]any{"seconds": 60}})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	var rule AlertRuleView
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &rule))
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/alert-rules", map[string]any{"name": "x", "kind": "nope", "params": map[string]any{}})
	c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/alert-rules?limit=10", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/alerts?state=firing", nil)
	c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/alert-rules/"+rule.ID, nil)

	w = c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", map[string]any{"url": "https://hooks.example.test/alerts"})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	var hook WebhookView
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &hook))
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/webhooks", map[string]any{"url": "ftp://nope"})
	c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks", nil)
	c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/webhooks/"+hook.ID+"/deliveries", nil)
	c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/webhooks/"+hook.ID, nil)

	w = c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "ci", "role": "operator", "expires_in": 3600})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	var key APIKeyView
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &key))
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/api-keys", map[string]any{"name": "ci", "role": "root"})
	c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/api-keys", nil)
	w = c.do("", http.MethodPost, "/api/v1/auth/token", map[string]any{"api_key": key.Key})
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	c.do("", http.MethodPost, "/api/v1/auth/token", map[string]any{"api_key": "vwk_not-a-key"})
	c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/api-keys/"+key.ID, nil)

	w = c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/enrollment-secrets", map[string]any{"name": "lab", "site": "lab", "labels": map[string]string{"role": "web"}, "max_uses": 10})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	var es EnrollmentSecretView
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &es))
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/enrollment-secrets", map[string]any{"name": "lab", "max_uses": -1})
	c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/enrollment-secrets", nil)
	c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/enrollment-secrets/"+es.ID, nil)
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/enrollment-secrets", map[string]any{"name": "lab", "agent_id_pattern": "lab-("})

	w = c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/agents/web-1/reenroll-secret", map[string]any{"expires_in": 3600})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/agents/web-1/reenroll-secret", map[string]any{"expires_in": 1})
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/agents/nobody/reenroll-secret", nil)
	w = c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/agents/web-2/revoke", nil)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/agents/web-2/revoke", nil)
	require.Equal(t, http.StatusNoContent, c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/agents/web-2/unrevoke", nil).Code)
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/agents/web-2/unrevoke", nil)
	require.Equal(t, http.StatusOK, c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/agents/web-2", nil).Code)
	c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/agents/web-2", nil)

	c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/audit?action=command.create&limit=5", nil)
	c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/audit?from=yesterday", nil)
	// Every recorded action, the revocations (no details) included.
	w = c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/audit?limit=1000", nil)
	require.Contains(t, w.Body.String(), "api_key.revoke")
	require.Contains(t, w.Body.String(), "enrollment_secret.revoke")
	w = c.do(auth.RoleAdmin, http.MethodGet, "/api/v1/audit/verify", nil)
	require.Contains(t, w.Body.String(), `"ok":true`)

	doc, err := OpenAPI()
	require.NoError(t, err)
	var missing []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !c.ok[method+" "+path] {
				missing = append(missing, method+" "+path)
			}
		}
	}
	sort.Strings(missing)
	require.Empty(t, missing, "operations never exercised with a successful response")
}
