package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/store"
)

// An agent whose enrollment succeeded but whose answer was lost (a timeout
// under load) retries with the credential it proposed: the gateway answers it
// again, instead of refusing the agent's own id as a takeover (which locked
// the agent out until an admin acted). Another credential for the id is
// still refused, and nothing is spent twice.
func TestEnrollRetryWithProposedCredential(t *testing.T) {
	ctx := context.Background()
	st := migratedStore(t)
	mux, _ := enrollGateway(t, st, Config{GatewayID: "gw-a", Limiter: ratelimit.NewMemory(ratelimit.MemoryConfig{})})
	enroll := func(secret, agentID, proposal string) (int, string) {
		body, _ := json.Marshal(map[string]string{"enrollment_secret": secret, "agent_id": agentID, "credential": proposal})
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/agent/v1/enroll", strings.NewReader(string(body))))
		var out struct{ Credential string }
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out.Credential
	}
	p1, p2 := strings.Repeat("A", 43), strings.Repeat("b", 43)

	// The bootstrap secret.
	for range 2 {
		code, cred := enroll("bootstrap-secret-0123", "retry-1", p1)
		require.Equal(t, http.StatusCreated, code)
		require.Equal(t, p1, cred)
	}
	code, _ := enroll("bootstrap-secret-0123", "retry-1", p2)
	require.Equal(t, http.StatusConflict, code, "another credential for a live id is a takeover")
	id, err := st.AgentForCredential(ctx, HashCredential(p1))
	require.NoError(t, err)
	require.Equal(t, "retry-1", id)

	// A stored secret with one use: the retry spends nothing.
	one := 1
	_, err = st.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "once", SecretHash: HashCredential("vwe_once-secret"), Site: "dc1",
		MaxUses: &one, CreatedBy: "admin", Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.NoError(t, err)
	for range 2 {
		code, cred := enroll("vwe_once-secret", "retry-2", p2)
		require.Equal(t, http.StatusCreated, code)
		require.Equal(t, p2, cred)
	}
	secs, _, err := st.ListEnrollmentSecrets(ctx, store.Page{})
	require.NoError(t, err)
	require.Len(t, secs, 1)
	require.Equal(t, 1, secs[0].Uses)
	code, _ = enroll("vwe_once-secret", "retry-3", strings.Repeat("c", 43))
	require.Equal(t, http.StatusUnauthorized, code, "the use is spent")

	// A revoked credential never becomes live again, even once the block is lifted.
	_, err = st.RevokeAgent(ctx, "retry-1", store.AuditEvent{Actor: "admin", Action: "agent.revoke"})
	require.NoError(t, err)
	require.NoError(t, st.UnrevokeAgent(ctx, "retry-1", store.AuditEvent{Actor: "admin", Action: "agent.unrevoke"}))
	code, _ = enroll("bootstrap-secret-0123", "retry-1", p1)
	require.Equal(t, http.StatusConflict, code)
	code, cred := enroll("bootstrap-secret-0123", "retry-1", strings.Repeat("d", 43))
	require.Equal(t, http.StatusCreated, code)
	require.Equal(t, strings.Repeat("d", 43), cred)

	// Proposals that are not 256 random bits of base64url are refused.
	for _, bad := range []string{"short", strings.Repeat("e", 42), strings.Repeat("f", 129), strings.Repeat("g", 42) + "="} {
		code, _ := enroll("bootstrap-secret-0123", "retry-4", bad)
		require.Equal(t, http.StatusBadRequest, code, bad)
	}
}
