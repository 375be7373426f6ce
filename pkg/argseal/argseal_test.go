package argseal_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/argseal"
)

func newKey() string {
	b := make([]byte, argseal.KeySize)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func TestSealOpenPurge(t *testing.T) {
	k, err := argseal.NewKeyring(newKey())
	require.NoError(t, err)
	args := `{"username":"ops","password":"hunter2-pass","nested":{"api_token":{"a":[1,2]},"list":[{"secret":7}]},"n":12345678901234567890}`
	sealed, changed, err := k.Seal([]byte(args))
	require.NoError(t, err)
	require.True(t, changed)
	require.NotContains(t, string(sealed), "hunter2")
	require.Contains(t, string(sealed), `"username":"ops"`)
	require.Equal(t, 3, strings.Count(string(sealed), argseal.Envelope))

	opened, err := k.Open(sealed)
	require.NoError(t, err)
	require.JSONEq(t, args, string(opened))
	require.Contains(t, string(opened), "12345678901234567890", "numbers are kept exactly")

	purged, changed, err := argseal.Purge(sealed)
	require.NoError(t, err)
	require.True(t, changed)
	require.Equal(t, 3, strings.Count(string(purged), `"purged"`))
	_, changed, err = argseal.Purge(purged)
	require.NoError(t, err)
	require.False(t, changed, "purging twice changes nothing")
	_, err = k.Open(purged)
	require.ErrorContains(t, err, "purged")

	plain, changed, err := k.Seal([]byte(`{"path":"/tmp"}`))
	require.NoError(t, err)
	require.False(t, changed)
	require.Equal(t, `{"path":"/tmp"}`, string(plain))
}

func TestOpenRefusesTampering(t *testing.T) {
	k, err := argseal.NewKeyring(newKey())
	require.NoError(t, err)
	sealed, _, err := k.Seal([]byte(`{"password":"p1","token":"t1"}`))
	require.NoError(t, err)

	// A ciphertext moved to another field does not open.
	moved := strings.Replace(strings.Replace(string(sealed), `"password"`, `"x_tmp"`, 1), `"token"`, `"password"`, 1)
	moved = strings.Replace(moved, `"x_tmp"`, `"token"`, 1)
	_, err = k.Open([]byte(moved))
	require.ErrorContains(t, err, "does not open")

	// Another key does not open it.
	other, err := argseal.NewKeyring(newKey())
	require.NoError(t, err)
	_, err = other.Open(sealed)
	require.ErrorContains(t, err, "not configured")

	// An envelope-looking value under a non-secret key is left alone.
	out, err := k.Open([]byte(`{"note":{"$sealed":"v1:00000000:AAAA"}}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"note":{"$sealed":"v1:00000000:AAAA"}}`, string(out))
}

func TestRotation(t *testing.T) {
	oldKey, newK := newKey(), newKey()
	old, err := argseal.NewKeyring(oldKey)
	require.NoError(t, err)
	sealed, _, err := old.Seal([]byte(`{"password":"p1"}`))
	require.NoError(t, err)
	rotated, err := argseal.NewKeyring(newK, oldKey)
	require.NoError(t, err)
	require.NotEqual(t, old.KeyID(), rotated.KeyID())
	opened, err := rotated.Open(sealed)
	require.NoError(t, err)
	require.JSONEq(t, `{"password":"p1"}`, string(opened))
}

func TestParseKey(t *testing.T) {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	for _, s := range []string{hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw)} {
		got, err := argseal.ParseKey(s)
		require.NoError(t, err, s)
		require.Equal(t, raw, got)
	}
	for _, s := range []string{"", "change-me-in-production", base64.StdEncoding.EncodeToString(raw[:16])} {
		_, err := argseal.ParseKey(s)
		require.Error(t, err, s)
	}
}
