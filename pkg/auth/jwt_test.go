package auth

import (
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

func newTestJWT(t *testing.T) *JWT {
	t.Helper()
	j, err := NewJWT(Config{Secret: []byte("0123456789abcdef0123456789abcdef"), Issuer: "viworks", Audience: "viworks-api"})
	require.NoError(t, err)
	return j
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	j := newTestJWT(t)
	tok, err := j.Issue("alice", RoleOperator, time.Minute)
	require.NoError(t, err)
	p, err := j.Verify(tok)
	require.NoError(t, err)
	require.Equal(t, "alice", p.Subject)
	require.Equal(t, RoleOperator, p.Role)
	require.NotEmpty(t, p.TokenID, "every token carries a jti")
	require.Empty(t, p.APIKeyID)
	require.WithinDuration(t, time.Now().Add(time.Minute), p.ExpiresAt, 2*time.Second)

	other, err := j.IssueSpec(Spec{Subject: "apikey:k1", Role: RoleViewer, APIKeyID: "k1"})
	require.NoError(t, err)
	p2, err := j.Verify(other.Token)
	require.NoError(t, err)
	require.Equal(t, "k1", p2.APIKeyID)
	require.Equal(t, other.ID, p2.TokenID)
	require.NotEqual(t, p.TokenID, p2.TokenID)
}

func TestLifetimeIsBounded(t *testing.T) {
	j := newTestJWT(t) // MaxLifetime 24h by default
	require.Equal(t, DefaultMaxLifetime, j.MaxLifetime())
	_, err := j.Issue("alice", RoleAdmin, 48*time.Hour)
	require.ErrorIs(t, err, ErrLifetime)
	_, err = j.Issue("alice", RoleAdmin, 24*time.Hour)
	require.NoError(t, err, "exactly the maximum is allowed")

	_, err = NewJWT(Config{Secret: []byte("0123456789abcdef0123456789abcdef"), Issuer: "i", Audience: "a", TTL: 2 * time.Hour, MaxLifetime: time.Hour})
	require.Error(t, err, "a default TTL beyond the maximum")
}

func TestVerifyRejects(t *testing.T) {
	j := newTestJWT(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		require.NoError(t, err)
		return s
	}
	good := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "a", "role": "admin", "iss": "viworks", "aud": "viworks-api", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	}
	with := func(k string, v any) jwt.MapClaims { c := good(); c[k] = v; return c }
	without := func(k string) jwt.MapClaims { c := good(); delete(c, k); return c }
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good())
	withTyp := func(typ any) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, good())
		if typ == nil {
			delete(tok.Header, "typ")
		} else {
			tok.Header["typ"] = typ
		}
		s, err := tok.SignedString(secret)
		require.NoError(t, err)
		return s
	}

	cases := []struct {
		name  string
		token string
	}{
		{"garbage", "not-a-token"},
		{"alg none", none},
		{"HS512", sign(jwt.SigningMethodHS512, secret, good())},
		{"wrong secret", sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), good())},
		{"expired", sign(jwt.SigningMethodHS256, secret, with("exp", now.Add(-time.Hour).Unix()))},
		{"no exp", sign(jwt.SigningMethodHS256, secret, without("exp"))},
		{"wrong issuer", sign(jwt.SigningMethodHS256, secret, with("iss", "other"))},
		{"no issuer", sign(jwt.SigningMethodHS256, secret, without("iss"))},
		{"wrong audience", sign(jwt.SigningMethodHS256, secret, with("aud", "other"))},
		{"no audience", sign(jwt.SigningMethodHS256, secret, without("aud"))},
		{"unknown role", sign(jwt.SigningMethodHS256, secret, with("role", "root"))},
		{"no subject", sign(jwt.SigningMethodHS256, secret, without("sub"))},
		{"issued in the future", sign(jwt.SigningMethodHS256, secret, with("iat", now.Add(time.Hour).Unix()))},
		{"100-year lifetime", sign(jwt.SigningMethodHS256, secret, with("exp", now.Add(100*365*24*time.Hour).Unix()))},
		{"lifetime just over 24h", sign(jwt.SigningMethodHS256, secret, with("exp", now.Add(24*time.Hour+time.Second).Unix()))},
		{"no iat", sign(jwt.SigningMethodHS256, secret, without("iat"))},
		{"no typ", withTyp(nil)},
		{"typ at+jwt", withTyp("at+jwt")},
		{"typ not a string", withTyp(7)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := j.Verify(tc.token)
			require.ErrorIs(t, err, ErrInvalidToken)
		})
	}
}

func TestVerifyLeeway(t *testing.T) {
	j := newTestJWT(t) // 30s leeway by default
	secret := []byte("0123456789abcdef0123456789abcdef")
	c := jwt.MapClaims{"sub": "a", "role": "admin", "iss": "viworks", "aud": "viworks-api", "exp": time.Now().Add(-10 * time.Second).Unix(), "iat": time.Now().Add(-time.Minute).Unix()}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	require.NoError(t, err)
	_, err = j.Verify(tok)
	require.NoError(t, err, "expired within the leeway")
}

func TestRoleAllows(t *testing.T) {
	require.True(t, RoleAdmin.Allows(RoleOperator))
	require.True(t, RoleOperator.Allows(RoleViewer))
	require.False(t, RoleViewer.Allows(RoleOperator))
	require.False(t, Role("root").Allows(RoleViewer))
	_, err := ParseRole("superuser")
	require.Error(t, err)
}

// A token verified once is answered from the cache until it expires (with
// the leeway); an altered copy of it is verified afresh and refused; the
// cache never holds more than verifiedMax tokens.
func TestVerifiedTokensCached(t *testing.T) {
	j, err := NewJWT(Config{Secret: []byte("0123456789abcdef0123456789abcdef"), Issuer: "viworks", Audience: "viworks-api", Leeway: time.Millisecond})
	require.NoError(t, err)
	tok, err := j.Issue("alice", RoleOperator, 1500*time.Millisecond)
	require.NoError(t, err)
	first, err := j.Verify(tok)
	require.NoError(t, err)
	second, err := j.Verify(tok)
	require.NoError(t, err)
	require.Equal(t, first, second)
	require.Contains(t, j.verified, tok)

	tampered := tok[:len(tok)-2] + "xx"
	_, err = j.Verify(tampered)
	require.ErrorIs(t, err, ErrInvalidToken)
	require.NotContains(t, j.verified, tampered)

	// The expiry is checked on every hit (NumericDate has whole seconds).
	require.Eventually(t, func() bool {
		_, err := j.Verify(tok)
		return err != nil
	}, 5*time.Second, 50*time.Millisecond)
	_, err = j.Verify(tok)
	require.ErrorIs(t, err, ErrInvalidToken)
	require.NotContains(t, j.verified, tok)

	for i := range verifiedMax + 10 {
		tk, err := j.Issue("bob-"+strconv.Itoa(i), RoleViewer, time.Minute)
		require.NoError(t, err)
		_, err = j.Verify(tk)
		require.NoError(t, err)
		require.LessOrEqual(t, len(j.verified), verifiedMax)
	}
}
