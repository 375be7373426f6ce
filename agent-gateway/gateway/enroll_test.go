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
	st := migratedStore(t)
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

	// The takeover: enrolling the enrolled edge-1 again with the bootstrap
	// secret is refused, and its credential keeps working.
	if code, _ := enroll("bootstrap-secret-0123", "edge-1", "lab"); code != http.StatusConflict {
		t.Fatalf("bootstrap re-enrollment of a live agent: %d, want 409", code)
	}
	if id, err := st.AgentForCredential(ctx, HashCredential(cred)); err != nil || id != "edge-1" {
		t.Fatalf("the real agent's credential after the attempt: %q %v", id, err)
	}
	// Rotation: proving the current credential gets a new one; the old dies.
	rotate := func(bearer string) (int, string) {
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/agent/v1/enroll", strings.NewReader(`{"agent_id":"edge-1"}`))
		req.Header.Set("Authorization", "Bearer "+bearer)
		mux.ServeHTTP(w, req)
		var out struct{ Credential string }
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out.Credential
	}
	if code, _ := rotate("not-the-credential"); code != http.StatusUnauthorized {
		t.Fatalf("rotation with a wrong credential: %d, want 401", code)
	}
	code, rotated := rotate(cred)
	if code != http.StatusCreated || rotated == "" {
		t.Fatalf("rotation: %d", code)
	}
	if _, err := st.AgentForCredential(ctx, HashCredential(cred)); err == nil {
		t.Fatal("the old credential still works after rotation")
	}
	// Rotation keeps what the secret imposed.
	must(t, st.MarkAgentOnline(ctx, store.AgentSession{ID: "edge-1", Site: "lab", GatewayID: "gw-test", SessionID: "s2", At: time.Now()}))
	a, err = st.GetAgent(ctx, "edge-1")
	must(t, err)
	if a.Site != "dc1" || a.ReportedSite != "lab" {
		t.Fatalf("site after rotation: %q (reported %q)", a.Site, a.ReportedSite)
	}
	// The takeover attempt and the wrong rotation credential: one more
	// aggregated event for this address.
	must(t, g.refusals.Flush(ctx))
	n, err = st.CountAudit(ctx, "agent.enroll.denied")
	must(t, err)
	if n != 2 {
		t.Fatalf("%d aggregated refusal events audited, want 2", n)
	}
	v, err := st.VerifyAudit(ctx, nil)
	must(t, err)
	if !v.OK || v.Checked < 4 {
		t.Fatalf("audit chain: %+v", v)
	}
}
