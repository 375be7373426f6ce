package apiserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

const restartTemplate = `{"name":"restart","verb":"echo","description":"restart a service",
	"args":{"message":"restart {{service}} on port {{port}}","port":"{{port}}","mode":"{{mode}}","force":"{{force}}","ratio":"{{ratio}}"},
	"parameters":{
		"service":{"type":"string","required":true,"pattern":"[a-z]+"},
		"port":{"type":"integer","default":8080},
		"mode":{"type":"enum","values":["soft","hard"],"default":"soft"},
		"force":{"type":"boolean"},
		"ratio":{"type":"number"}},
	"priority":"high","timeout_seconds":30}`

// exerciseSchedules answers every template and schedule operation at least
// once for TestOpenAPIResponsesValidate (agent web-1 is online, with echo).
func exerciseSchedules(t *testing.T, c *contract) {
	var tpl map[string]any
	require.NoError(t, json.Unmarshal([]byte(restartTemplate), &tpl))
	w := c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/templates", tpl)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	w = c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/templates", tpl)
	require.Equal(t, 2, decode[TemplateView](t, w).Version)
	c.do(auth.RoleAdmin, http.MethodPost, "/api/v1/templates", map[string]any{"name": "Bad Name", "verb": "echo"})
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/templates", tpl)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/templates?limit=5", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/templates/restart", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/templates/restart/versions", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/templates/restart/versions/1", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/templates/nope/versions/1", nil)

	w = c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands",
		map[string]any{"template": "restart@1", "params": map[string]any{"service": "nginx"}, "agent_targets": []string{"web-1"}})
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands",
		map[string]any{"template": "restart", "params": map[string]any{"port": "x"}, "agent_targets": []string{"web-1"}})

	w = c.do(auth.RoleOperator, http.MethodPost, "/api/v1/schedules", map[string]any{"name": "nightly", "cron": "0 3 * * *",
		"timezone": "Europe/Berlin", "template": "restart", "params": map[string]any{"service": "nginx"}, "agent_targets": []string{"web-1"}})
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	sc := decode[ScheduleView](t, w)
	c.do(auth.RoleOperator, http.MethodPost, "/api/v1/schedules", map[string]any{"name": "bad", "cron": "0 25 * * *", "verb": "echo", "agent_targets": []string{"web-1"}})
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/schedules", nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/schedules/"+sc.ID, nil)
	c.do(auth.RoleViewer, http.MethodGet, "/api/v1/schedules/not-a-schedule", nil)
	w = c.do(auth.RoleOperator, http.MethodPost, "/api/v1/schedules/"+sc.ID+"/pause", nil)
	require.True(t, decode[ScheduleView](t, w).Paused)
	w = c.do(auth.RoleOperator, http.MethodPost, "/api/v1/schedules/"+sc.ID+"/resume", nil)
	require.False(t, decode[ScheduleView](t, w).Paused)
	require.Equal(t, http.StatusNoContent, c.do(auth.RoleOperator, http.MethodDelete, "/api/v1/schedules/"+sc.ID, nil).Code)
	c.do(auth.RoleOperator, http.MethodDelete, "/api/v1/schedules/"+sc.ID, nil)
	require.Equal(t, http.StatusNoContent, c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/templates/restart", nil).Code)
	c.do(auth.RoleAdmin, http.MethodDelete, "/api/v1/templates/restart", nil)
}

func newScheduleAPI(t *testing.T) *readAPI {
	t.Helper()
	a := newReadAPI(t, store.SQLitePrefix+filepath.Join(t.TempDir(), "viworks.db"), bus.NewMemory(), Config{})
	a.agent("web-1", "lab", "gw1", []string{"echo"}, nil)
	w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/templates", restartTemplate)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	return a
}

// problemPointers checks a problem+json answer and returns its pointers.
func problemPointers(t *testing.T, a *readAPI, role auth.Role, path, body string, code int) []string {
	t.Helper()
	w := a.do(role, http.MethodPost, path, body)
	p := decode[Problem](t, w)
	require.Equal(t, code, w.Code, w.Body.String())
	out := []string{}
	for _, e := range p.Errors {
		out = append(out, e.Pointer)
	}
	return out
}

func TestCommandFromTemplate(t *testing.T) {
	a := newScheduleAPI(t)
	w := a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands",
		`{"template":"restart","params":{"service":"nginx","force":true,"ratio":0.5},"agent_targets":["web-1"],"priority":"low"}`)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	v := decode[CommandView](t, w)
	require.Equal(t, "echo", v.Verb)
	require.JSONEq(t, `{"message":"restart nginx on port 8080","port":8080,"mode":"soft","force":true,"ratio":0.5}`, string(v.Args),
		"typed values, defaults applied, text interpolated")
	require.Equal(t, "low", v.Priority, "the request overrides the template's default")
	require.Equal(t, 30, v.TimeoutSeconds, "the template's default applies")
	w = a.do(auth.RoleAdmin, http.MethodGet, "/api/v1/audit?action=command.create", "")
	require.Contains(t, w.Body.String(), `"template":"restart@1"`)
}

// Bad input answers 422 with a JSON pointer per invalid field, and nothing
// is stored.
func TestTemplateAndScheduleBadInput(t *testing.T) {
	a := newScheduleAPI(t)
	for _, tc := range []struct {
		name, path, body string
		role             auth.Role
		pointers         []string
	}{
		{"param of the wrong type", "/api/v1/commands", `{"template":"restart","params":{"service":"nginx","port":"80"},"agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/params/port"}},
		{"required param missing", "/api/v1/commands", `{"template":"restart","params":{},"agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/params/service"}},
		{"pattern, enum, unknown", "/api/v1/commands", `{"template":"restart","params":{"service":"NGINX","mode":"medium","extra":1,"force":"yes","ratio":"x"},"agent_targets":["web-1"]}`, auth.RoleOperator,
			[]string{"/params/extra", "/params/force", "/params/mode", "/params/ratio", "/params/service"}},
		{"unknown template", "/api/v1/commands", `{"template":"nope","params":{},"agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/template"}},
		{"unknown version", "/api/v1/commands", `{"template":"restart@9","agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/template"}},
		{"verb with a template", "/api/v1/commands", `{"template":"restart","verb":"echo","params":{"service":"a"},"agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/verb"}},
		{"unparsable cron", "/api/v1/schedules", `{"name":"s","cron":"every day","verb":"echo","agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/cron"}},
		{"unknown time zone", "/api/v1/schedules", `{"name":"s","cron":"0 3 * * *","timezone":"Mars/Olympus","verb":"echo","agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/timezone"}},
		{"interval below 1 s", "/api/v1/schedules", `{"name":"s","interval_seconds":0,"verb":"echo","agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/cron"}},
		{"negative interval", "/api/v1/schedules", `{"name":"s","interval_seconds":-5,"verb":"echo","agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/interval_seconds"}},
		{"schedule of an unknown template", "/api/v1/schedules", `{"name":"s","interval_seconds":60,"template":"nope","agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/template"}},
		{"schedule with bad params", "/api/v1/schedules", `{"name":"s","interval_seconds":60,"template":"restart","params":{"port":1.5},"agent_targets":["web-1"]}`, auth.RoleOperator, []string{"/params/port", "/params/service"}},
		{"schedule policies", "/api/v1/schedules", `{"name":"","interval_seconds":60,"overlap":"never","catch_up":"all","jitter_seconds":-1,"verb":"echo"}`, auth.RoleOperator,
			[]string{"/name", "/jitter_seconds", "/overlap", "/catch_up", "/agent_targets"}},
		{"template: bad parameters", "/api/v1/templates", `{"name":"t","verb":"echo","args":{"m":"{{missing}}"},"parameters":{"a":{"type":"date"},"b":{"type":"enum"},"c":{"type":"integer","default":"x"},"d":{"type":"string","pattern":"("}}}`, auth.RoleAdmin,
			[]string{"/parameters/a/type", "/parameters/b/values", "/parameters/c/default", "/parameters/d/pattern", "/args/m"}},
		{"template: secret outside a secret key", "/api/v1/templates", `{"name":"t","verb":"echo","args":{"user":"{{pw}}"},"parameters":{"pw":{"type":"string","secret":true}}}`, auth.RoleAdmin, []string{"/args/user"}},
		{"template: literal secret", "/api/v1/templates", `{"name":"t","verb":"echo","args":{"password":"hunter2"}}`, auth.RoleAdmin, []string{"/args/password"}},
		{"schedule: bad target id", "/api/v1/schedules", `{"name":"s","interval_seconds":60,"verb":"echo","agent_targets":["ok","bad id"]}`, auth.RoleOperator, []string{"/agent_targets/1"}},
		{"template: bad defaults", "/api/v1/templates", `{"name":"t","verb":"echo","mode":"some","timeout_seconds":0}`, auth.RoleAdmin, []string{"/mode", "/timeout_seconds"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ElementsMatch(t, tc.pointers, problemPointers(t, a, tc.role, tc.path, tc.body, http.StatusUnprocessableEntity))
		})
	}
	require.Len(t, decode[List[CommandSummaryView]](t, a.get("/api/v1/commands")).Items, 0, "no command stored")
	require.Len(t, decode[List[ScheduleView]](t, a.get("/api/v1/schedules")).Items, 0, "no schedule stored")
	require.Len(t, decode[List[TemplateView]](t, a.get("/api/v1/templates")).Items, 1, "no template stored")
}

// A secret parameter is sealed at rest (command, schedule; read with raw SQL)
// and redacted in every view and audit event; the template stores only its
// placeholder.
func TestSecretParamsSealedAndRedacted(t *testing.T) {
	ctx := context.Background()
	raw := make([]byte, argseal.KeySize)
	_, _ = rand.Read(raw)
	keys, err := argseal.NewKeyring(base64.StdEncoding.EncodeToString(raw))
	require.NoError(t, err)
	url := testenv.Postgres(t)
	a := newReadAPI(t, url, bus.NewMemory(), Config{Args: keys})
	a.agent("db-1", "prod", "gw1", []string{"create_user"}, nil)
	w := a.do(auth.RoleAdmin, http.MethodPost, "/api/v1/templates", `{"name":"user","verb":"create_user",
		"args":{"username":"{{user}}","password":"{{pw}}"},
		"parameters":{"user":{"type":"string","required":true},"pw":{"type":"string","required":true,"secret":true}}}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())

	w = a.do(auth.RoleOperator, http.MethodPost, "/api/v1/commands", `{"template":"user","params":{"user":"u1","pw":"sekrit-param-42"},"agent_targets":["db-1"]}`)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	require.JSONEq(t, `{"username":"u1","password":"REDACTED"}`, string(decode[CommandView](t, w).Args))
	w = a.do(auth.RoleOperator, http.MethodPost, "/api/v1/schedules", `{"name":"s","interval_seconds":3600,"template":"user","params":{"user":"u1","pw":"sekrit-param-42"},"agent_targets":["db-1"]}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	sc := decode[ScheduleView](t, w)
	require.JSONEq(t, `{"user":"u1","pw":"REDACTED"}`, string(sc.Params))
	require.JSONEq(t, `{"username":"u1","password":"REDACTED"}`, string(sc.Command.Args))
	for _, path := range []string{"/api/v1/schedules/" + sc.ID, "/api/v1/schedules", "/api/v1/commands", "/api/v1/templates/user"} {
		w := a.get(path)
		require.Equal(t, http.StatusOK, w.Code)
		require.NotContains(t, w.Body.String(), "sekrit-param-42", path)
		require.NotContains(t, w.Body.String(), argseal.Envelope, path)
	}

	db, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer db.Close()
	for _, table := range []string{"commands", "schedules", "command_templates", "audit_events"} {
		rows, err := db.QueryContext(ctx, `SELECT t::text FROM `+table+` t`)
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			var row string
			require.NoError(t, rows.Scan(&row))
			require.NotContains(t, row, "sekrit-param-42", table)
			n++
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
		require.Positive(t, n, table)
	}
	var command string
	require.NoError(t, db.QueryRowContext(ctx, `SELECT command::text FROM schedules WHERE id = $1`, sc.ID).Scan(&command))
	var spec store.CommandSpec
	require.NoError(t, json.Unmarshal([]byte(command), &spec))
	require.True(t, spec.ArgsSealed)
	opened, err := keys.Open(spec.Args)
	require.NoError(t, err)
	require.JSONEq(t, `{"username":"u1","password":"sekrit-param-42"}`, string(opened), "each run gets the sealed value")
}
