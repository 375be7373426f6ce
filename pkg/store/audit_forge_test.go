package store_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// forgeHash is the attacker's best hash of r: the chain's own encoding and
// key id, under a key the attacker made up (the real one is not in the
// database).
func forgeHash(t *testing.T, r store.AuditEvent) string {
	t.Helper()
	var details any
	require.NoError(t, json.Unmarshal(r.Details, &details))
	d, err := json.Marshal(details)
	require.NoError(t, err)
	enc, err := json.Marshal([]any{"viworks-audit-v2", r.KeyID, r.ID, r.At.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z"),
		r.Actor, r.Action, r.Target, r.RequestID, r.ClientIP, json.RawMessage(d), r.PrevHash})
	require.NoError(t, err)
	m := hmac.New(sha256.New, []byte("the attacker's guess at the audit key"))
	m.Write(enc)
	return hex.EncodeToString(m.Sum(nil))
}

// keptHead is the head a keeper outside the database holds.
func keptHead(t *testing.T, s *store.Store) store.AuditHead {
	t.Helper()
	h, err := s.AuditHead(context.Background())
	require.NoError(t, err)
	require.NoError(t, s.CheckAuditHead(h))
	return h
}

func verifyAgainst(t *testing.T, s *store.Store, kept store.AuditHead) store.AuditVerification {
	t.Helper()
	v, err := s.VerifyAudit(context.Background(), &kept)
	require.NoError(t, err)
	return v
}
