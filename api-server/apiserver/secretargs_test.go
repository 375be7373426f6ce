package apiserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store/storetest"
)

// TestSecretArgsEncryptedAtRest: a password given to POST /commands is not
// in the database in plaintext (read with raw SQL: the command row, its
// audit event and the stored idempotent answer), the API shows it redacted,
// and the stored envelope opens to it with the key.
func TestSecretArgsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	raw := make([]byte, argseal.KeySize)
	_, _ = rand.Read(raw)
	keys, err := argseal.NewKeyring(base64.StdEncoding.EncodeToString(raw))
	require.NoError(t, err)
	url := storetest.MigratedPostgres(t)
	a := newReadAPI(t, url, bus.NewMemory(), Config{Args: keys})
	a.agent("a1", "prod", "gw1", []string{"create_panel_user"}, nil)

	const body = `{"verb":"create_panel_user","args":{"username":"u1","password":"securepass123","opts":{"api_token":"tok-sekrit"}},"agent_targets":["a1"]}`
	post := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/commands", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+a.tokens[auth.RoleOperator])
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(idempotencyHeader, "key-1")
		w := httptest.NewRecorder()
		a.srv.Handler().ServeHTTP(w, req)
		return w
	}
	w := post()
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	v := decode[CommandView](t, w)
	require.JSONEq(t, `{"username":"u1","password":"REDACTED","opts":{"api_token":"REDACTED"}}`, string(v.Args))
	replay := post()
	require.Equal(t, http.StatusAccepted, replay.Code, replay.Body.String())
	require.Equal(t, v.ID, decode[CommandView](t, replay).ID, "the replay answers the same command")
	got := a.get("/api/v1/commands/" + v.ID)
	require.Equal(t, http.StatusOK, got.Code)
	require.NotContains(t, got.Body.String(), "securepass123")
	require.NotContains(t, got.Body.String(), argseal.Envelope, "views show no ciphertext either")

	db, err := sql.Open("pgx", url)
	require.NoError(t, err)
	defer db.Close()
	var args string
	var sealed bool
	require.NoError(t, db.QueryRowContext(ctx, `SELECT args::text, args_sealed FROM commands WHERE id = $1`, v.ID).Scan(&args, &sealed))
	require.True(t, sealed)
	for _, table := range []string{"commands", "executions", "audit_events", "idempotency_keys"} {
		rows, err := db.QueryContext(ctx, `SELECT t::text FROM `+table+` t`)
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			var row string
			require.NoError(t, rows.Scan(&row))
			require.NotContains(t, row, "securepass123", table)
			require.NotContains(t, row, "tok-sekrit", table)
			n++
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
		require.Positive(t, n, table)
	}
	opened, err := keys.Open([]byte(args))
	require.NoError(t, err)
	require.JSONEq(t, `{"username":"u1","password":"securepass123","opts":{"api_token":"tok-sekrit"}}`, string(opened))
}
