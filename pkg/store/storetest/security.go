package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func testAPIKeysStore(t *testing.T, s *store.Store) {
	ctx := context.Background()
	past := time.Now().Add(-time.Minute)
	k1, err := s.CreateAPIKey(ctx, store.NewAPIKey{Name: "ci", Role: "operator", KeyHash: "h1", Prefix: "vwk_abcd", CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "api_key.create"}})
	require.NoError(t, err)
	_, err = s.CreateAPIKey(ctx, store.NewAPIKey{Name: "old", Role: "viewer", KeyHash: "h2", Prefix: "vwk_efgh", CreatedBy: "admin", ExpiresAt: &past,
		Audit: store.AuditEvent{Actor: "admin", Action: "api_key.create"}})
	require.NoError(t, err)

	got, err := s.UseAPIKey(ctx, "h1", time.Now())
	require.NoError(t, err)
	require.Equal(t, k1.ID, got.ID)
	require.Equal(t, "operator", got.Role)
	_, err = s.UseAPIKey(ctx, "h2", time.Now()) // expired
	require.ErrorIs(t, err, store.ErrUnknownAPIKey)
	_, err = s.UseAPIKey(ctx, "nope", time.Now())
	require.ErrorIs(t, err, store.ErrUnknownAPIKey)

	keys, next, err := s.ListAPIKeys(ctx, store.Page{Limit: 1})
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.NotEmpty(t, next)
	keys, _, err = s.ListAPIKeys(ctx, store.Page{Limit: 1, Cursor: next})
	require.NoError(t, err)
	require.Equal(t, "old", keys[0].Name)

	revoked, err := s.APIKeyRevoked(ctx, k1.ID)
	require.NoError(t, err)
	require.False(t, revoked)
	revoked, err = s.APIKeyRevoked(ctx, "00000000-0000-0000-0000-000000000000")
	require.NoError(t, err)
	require.True(t, revoked, "an unknown key's tokens are refused")
	require.NoError(t, s.RevokeAPIKey(ctx, k1.ID, store.AuditEvent{Actor: "admin", Action: "api_key.revoke"}))
	revoked, err = s.APIKeyRevoked(ctx, k1.ID)
	require.NoError(t, err)
	require.True(t, revoked)
	require.NoError(t, s.RevokeAPIKey(ctx, k1.ID, store.AuditEvent{Actor: "admin", Action: "api_key.revoke"}))
	require.ErrorIs(t, s.RevokeAPIKey(ctx, "00000000-0000-0000-0000-000000000000", store.AuditEvent{Actor: "admin", Action: "api_key.revoke"}), store.ErrNotFound)
	_, err = s.UseAPIKey(ctx, "h1", time.Now())
	require.ErrorIs(t, err, store.ErrUnknownAPIKey)
	n, err := s.CountAudit(ctx, "api_key.revoke")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	v, err := s.VerifyAudit(ctx, nil)
	require.NoError(t, err)
	require.True(t, v.OK)
}

func testEnrollmentSecretsStore(t *testing.T, s *store.Store) {
	ctx := context.Background()
	three := 3
	sec, err := s.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "dc1", SecretHash: "sh", Site: "dc1",
		Labels: map[string]string{"role": "edge"}, MaxUses: &three, CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.NoError(t, err)

	// Concurrent enrollments spend at most max_uses.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, denied := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.EnrollWithSecret(ctx, "sh", "agent-"+string(rune('a'+i)), "cred-"+string(rune('a'+i)), time.Now())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrUnknownEnrollmentSecret):
				denied++
			default:
				t.Errorf("enrolling: %v", err)
			}
		}(i)
	}
	wg.Wait()
	require.Equal(t, 3, ok)
	require.Equal(t, 5, denied)
	list, _, err := s.ListEnrollmentSecrets(ctx, store.Page{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, 3, list[0].Uses)

	// The imposed site and labels win over the agent's HELLO, now and later.
	var enrolled string
	for _, id := range []string{"agent-a", "agent-b", "agent-c", "agent-d", "agent-e", "agent-f", "agent-g", "agent-h"} {
		if _, err := s.AgentForCredential(ctx, "cred-"+id[len(id)-1:]); err == nil {
			enrolled = id
			break
		}
	}
	require.NotEmpty(t, enrolled)
	for i := 0; i < 2; i++ {
		require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: enrolled, Site: "elsewhere", Labels: map[string]string{"role": "admin"},
			GatewayID: "gw", SessionID: "s", At: time.Now()}))
		a, err := s.GetAgent(ctx, enrolled)
		require.NoError(t, err)
		require.Equal(t, "dc1", a.Site)
		require.Equal(t, store.StringMap{"role": "edge"}, a.Labels)
	}
	// An agent without an imposing secret only reports what it claims.
	require.NoError(t, s.MarkAgentOnline(ctx, store.AgentSession{ID: "free", Site: "lab", GatewayID: "gw", SessionID: "s", At: time.Now()}))
	a, err := s.GetAgent(ctx, "free")
	require.NoError(t, err)
	require.Equal(t, "", a.Site)
	require.Equal(t, "lab", a.ReportedSite)

	// Revoked and expired secrets enroll nobody.
	past := time.Now().Add(-time.Second)
	_, err = s.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "old", SecretHash: "old", CreatedBy: "admin", ExpiresAt: &past,
		Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.NoError(t, err)
	_, err = s.EnrollWithSecret(ctx, "old", "x", "cx", time.Now())
	require.ErrorIs(t, err, store.ErrUnknownEnrollmentSecret)
	two, err := s.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "r", SecretHash: "r", CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.NoError(t, err)
	require.NoError(t, s.RevokeEnrollmentSecret(ctx, two.ID, store.AuditEvent{Actor: "admin", Action: "enrollment_secret.revoke"}))
	_, err = s.EnrollWithSecret(ctx, "r", "x", "cx", time.Now())
	require.ErrorIs(t, err, store.ErrUnknownEnrollmentSecret)
	require.ErrorIs(t, s.RevokeEnrollmentSecret(ctx, sec.ID+"x", store.AuditEvent{Actor: "admin", Action: "enrollment_secret.revoke"}), store.ErrNotFound)
}

func testIdempotencyKeysStore(t *testing.T, s *store.Store) {
	ctx := context.Background()
	rec, claimed, err := s.BeginIdempotent(ctx, "alice", "k1", "hash-a", time.Hour)
	require.NoError(t, err)
	require.True(t, claimed)
	require.Equal(t, "hash-a", rec.RequestHash)

	rec, claimed, err = s.BeginIdempotent(ctx, "alice", "k1", "hash-a", time.Hour)
	require.NoError(t, err)
	require.False(t, claimed)
	require.Equal(t, 0, rec.StatusCode) // in flight

	// Another principal has its own key space.
	_, claimed, err = s.BeginIdempotent(ctx, "bob", "k1", "hash-b", time.Hour)
	require.NoError(t, err)
	require.True(t, claimed)

	require.NoError(t, s.CompleteIdempotent(ctx, "alice", "k1", 202, "/api/v1/commands/c1", []byte(`{"id":"c1"}`)))
	rec, claimed, err = s.BeginIdempotent(ctx, "alice", "k1", "hash-a", time.Hour)
	require.NoError(t, err)
	require.False(t, claimed)
	require.Equal(t, 202, rec.StatusCode)
	require.JSONEq(t, `{"id":"c1"}`, string(rec.Response))
	require.Equal(t, "/api/v1/commands/c1", rec.Location)

	// Abandoned keys can be claimed again; expired ones are replaced and purged.
	require.NoError(t, s.AbandonIdempotent(ctx, "bob", "k1"))
	_, claimed, err = s.BeginIdempotent(ctx, "bob", "k1", "hash-b", time.Millisecond)
	require.NoError(t, err)
	require.True(t, claimed)
	time.Sleep(5 * time.Millisecond)
	_, claimed, err = s.BeginIdempotent(ctx, "bob", "k1", "hash-c", time.Millisecond)
	require.NoError(t, err)
	require.True(t, claimed)
	time.Sleep(5 * time.Millisecond)
	n, err := s.DeleteIdempotencyKeysBefore(ctx, time.Now(), 10)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}
