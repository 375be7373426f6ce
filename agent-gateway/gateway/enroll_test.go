package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestEnrollWithStoredSecrets enrolls against a real Postgres with the
// bootstrap secret and with secrets issued through the API.
func TestEnrollWithStoredSecrets(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: testenv.Postgres(t)})
	must(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	must(t, err)
	log := logrus.New()
	log.SetOutput(io.Discard)
	mem := bus.NewMemory()
	g, err := New(st, mem, mem, prometheus.NewRegistry(), log, Config{GatewayID: "gw-test", EnrollmentSecret: "bootstrap-secret-0123"})
	must(t, err)
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = g.Run(runCtx) }() // its group committers write credentials and audit
	t.Cleanup(func() { stop(); <-stopped })
	mux := http.NewServeMux()
	g.Register(mux)

	enroll := func(secret, agentID, site string) (int, string) {
		body, _ := json.Marshal(map[string]string{"enrollment_secret": secret, "agent_id": agentID, "site": site})
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/agent/v1/enroll", strings.NewReader(string(body))))
		var out struct{ Credential string }
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out.Credential
	}
	one := 1
	_, err = st.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "dc1", SecretHash: HashCredential("vwe_dc1-secret"), Site: "dc1",
		Labels: map[string]string{"tier": "edge"}, MaxUses: &one, CreatedBy: "admin", Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	must(t, err)

	code, cred := enroll("vwe_dc1-secret", "edge-1", "claimed-site")
	if code != http.StatusCreated || cred == "" {
		t.Fatalf("enrolling with a stored secret: %d", code)
	}
	id, err := st.AgentForCredential(ctx, HashCredential(cred))
	must(t, err)
	if id != "edge-1" {
		t.Fatalf("credential belongs to %q", id)
	}
	// The imposed site and labels win over the agent's HELLO.
	must(t, st.MarkAgentOnline(ctx, store.AgentSession{ID: "edge-1", Site: "claimed-site", Labels: map[string]string{"tier": "core"}, GatewayID: "gw-test", SessionID: "s1", At: time.Now()}))
	a, err := st.GetAgent(ctx, "edge-1")
	must(t, err)
	if a.Site != "dc1" || a.Labels["tier"] != "edge" {
		t.Fatalf("imposed attributes lost: site %q labels %v", a.Site, a.Labels)
	}

	// Used up, unknown and empty secrets are refused and audited.
	for _, secret := range []string{"vwe_dc1-secret", "vwe_unknown", "", strings.Repeat("x", 300)} {
		if code, _ := enroll(secret, "edge-2", ""); code != http.StatusUnauthorized {
			t.Fatalf("secret %.20q: got %d, want 401", secret, code)
		}
	}
	n, err := st.CountAudit(ctx, "agent.enroll.denied")
	must(t, err)
	if n != 0 {
		t.Fatalf("%d denied enrollments audited on the request path, want 0", n)
	}
	must(t, g.refusals.Flush(ctx))
	denied, _, err := st.ListAudit(ctx, store.AuditFilter{Action: "agent.enroll.denied"})
	must(t, err)
	var d struct {
		Count   int            `json:"count"`
		Targets map[string]int `json:"targets"`
	}
	if len(denied) == 1 {
		must(t, json.Unmarshal(denied[0].Details, &d))
	}
	if len(denied) != 1 || d.Count != 4 || d.Targets["edge-2"] != 4 || denied[0].ClientIP != "192.0.2.1" {
		t.Fatalf("denied enrollments audited as %d events (%+v), want one event of count 4", len(denied), d)
	}

	// The bootstrap secret still works, and lifts what a secret imposed.
	if code, _ := enroll("bootstrap-secret-0123", "edge-1", "lab"); code != http.StatusCreated {
		t.Fatalf("bootstrap enrollment: %d", code)
	}
	must(t, st.MarkAgentOnline(ctx, store.AgentSession{ID: "edge-1", Site: "lab", GatewayID: "gw-test", SessionID: "s2", At: time.Now()}))
	a, err = st.GetAgent(ctx, "edge-1")
	must(t, err)
	if a.Site != "lab" {
		t.Fatalf("site after bootstrap enrollment: %q", a.Site)
	}
	v, err := st.VerifyAudit(ctx, nil)
	must(t, err)
	if !v.OK || v.Checked < 4 {
		t.Fatalf("audit chain: %+v", v)
	}
}
