package apiserver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
)

// publicRoutes answer without a token; everything else must be refused
// without a valid token of a sufficient role.
var publicRoutes = map[string]bool{
	"GET /api/v1/health":          true,
	"GET /api/v1/openapi.json":    true,
	"POST /api/v1/auth/token":     true,
	"GET /api/v1/health/database": true,
	"GET /api/v1/health/redis":    true,
}

// routeRoles is the least role of every protected route. A route
// registered without an entry here fails TestEveryRouteDeniesByDefault: new
// routes must declare who may call them.
var routeRoles = map[string]auth.Role{
	"GET /api/v1/agents":                      auth.RoleViewer,
	"GET /api/v1/audit":                       auth.RoleAdmin,
	"GET /api/v1/audit/verify":                auth.RoleAdmin,
	"POST /api/v1/api-keys":                   auth.RoleAdmin,
	"GET /api/v1/api-keys":                    auth.RoleAdmin,
	"DELETE /api/v1/api-keys/:id":             auth.RoleAdmin,
	"POST /api/v1/enrollment-secrets":         auth.RoleAdmin,
	"GET /api/v1/enrollment-secrets":          auth.RoleAdmin,
	"DELETE /api/v1/enrollment-secrets/:id":   auth.RoleAdmin,
	"POST /api/v1/agents/:id/revoke":          auth.RoleAdmin,
	"POST /api/v1/agents/:id/unrevoke":        auth.RoleAdmin,
	"DELETE /api/v1/agents/:id":               auth.RoleAdmin,
	"POST /api/v1/agents/:id/reenroll-secret": auth.RoleAdmin,
	"GET /api/v1/agents/:id":                  auth.RoleViewer,
	"PATCH /api/v1/agents/:id":                auth.RoleAdmin,
	"GET /api/v1/agents/:id/health":           auth.RoleViewer,
	"GET /api/v1/agents/:id/telemetry":        auth.RoleViewer,
	"GET /api/v1/commands":                    auth.RoleViewer,
	"GET /api/v1/status":                      auth.RoleViewer,
	"GET /api/v1/metrics":                     auth.RoleViewer,
	"POST /api/v1/commands":                   auth.RoleOperator,
	"POST /api/v1/commands/preview":           auth.RoleOperator,
	"GET /api/v1/commands/:id":                auth.RoleViewer,
	"DELETE /api/v1/commands/:id":             auth.RoleOperator,
	"GET /api/v1/events":                      auth.RoleViewer,
	"GET /api/v1/alert-rules":                 auth.RoleAdmin,
	"POST /api/v1/alert-rules":                auth.RoleAdmin,
	"DELETE /api/v1/alert-rules/:id":          auth.RoleAdmin,
	"GET /api/v1/alerts":                      auth.RoleViewer,
	"GET /api/v1/webhooks":                    auth.RoleAdmin,
	"POST /api/v1/webhooks":                   auth.RoleAdmin,
	"DELETE /api/v1/webhooks/:id":             auth.RoleAdmin,
	"GET /api/v1/webhooks/:id/deliveries":     auth.RoleAdmin,

	"POST /api/v1/templates":                        auth.RoleAdmin,
	"GET /api/v1/templates":                         auth.RoleViewer,
	"GET /api/v1/templates/:name":                   auth.RoleViewer,
	"DELETE /api/v1/templates/:name":                auth.RoleAdmin,
	"GET /api/v1/templates/:name/versions":          auth.RoleViewer,
	"GET /api/v1/templates/:name/versions/:version": auth.RoleViewer,
	"POST /api/v1/schedules":                        auth.RoleOperator,
	"GET /api/v1/schedules":                         auth.RoleViewer,
	"GET /api/v1/schedules/:id":                     auth.RoleViewer,
	"DELETE /api/v1/schedules/:id":                  auth.RoleOperator,
	"POST /api/v1/schedules/:id/pause":              auth.RoleOperator,
	"POST /api/v1/schedules/:id/resume":             auth.RoleOperator,
}

// forge builds a token by hand: header and claims as given, signed with
// HS256 under secret (nil: unsigned, as alg none tokens are).
func forge(secret []byte, header, claims map[string]any) string {
	enc := base64.RawURLEncoding.EncodeToString
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	signing := enc(h) + "." + enc(c)
	if secret == nil {
		return signing + "."
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + enc(mac.Sum(nil))
}

func adminClaims(iat, exp time.Time) map[string]any {
	return map[string]any{"sub": "mallory", "role": "admin", "iss": "viworks-test", "aud": "viworks-api", "iat": iat.Unix(), "exp": exp.Unix()}
}

// TestEveryRouteDeniesByDefault walks every registered route and proves that
// no token, an expired token, a token for another audience or issuer, an
// unsigned (alg none) token, a token signed with another key and a role below
// the route's are refused with problem+json, and that the route's own role
// passes the gate.
func TestEveryRouteDeniesByDefault(t *testing.T) {
	a := newAlertAPI(t)
	secret := []byte(strings.Repeat("k", 48))
	issue := func(cfg auth.Config, role auth.Role, ttl time.Duration) string {
		j, err := auth.NewJWT(cfg)
		require.NoError(t, err)
		tok, err := j.Issue("mallory", role, ttl)
		require.NoError(t, err)
		return tok
	}
	good := auth.Config{Secret: secret, Issuer: "viworks-test", Audience: "viworks-api"}
	otherAud, otherIss, otherKey := good, good, good
	otherAud.Audience = "another-api"
	otherIss.Issuer = "someone-else"
	otherKey.Secret = []byte(strings.Repeat("x", 48))
	now := time.Now()
	hs256 := map[string]any{"alg": "HS256", "typ": "JWT"}
	noExp := adminClaims(now, now)
	delete(noExp, "exp")

	// Control: a forged token with valid claims and the right key passes, so
	// the refusals below are about what each one changes.
	req := httptest.NewRequest(http.MethodGet, "/api/v1/agents", nil)
	req.Header.Set("Authorization", "Bearer "+forge(secret, hs256, adminClaims(now, now.Add(time.Hour))))
	w := serve(t, a.srv.Handler(), req)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())

	routes := a.srv.engine.Routes()
	require.NotEmpty(t, routes)
	seen := map[string]bool{}
	for _, r := range routes {
		key := r.Method + " " + r.Path
		seen[key] = true
		if publicRoutes[key] {
			continue
		}
		need, ok := routeRoles[key]
		require.True(t, ok, "route %s is registered without a declared role in routeRoles", key)
		path := strings.NewReplacer(":id", "0b7e5f43-5d3c-4c43-a6b6-3d0e3a7d6a11").Replace(r.Path)

		t.Run(key, func(t *testing.T) {
			send := func(token string) *httptest.ResponseRecorder {
				// Bounded: a stream (events) that passes the gate ends with the context.
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				req := httptest.NewRequestWithContext(ctx, r.Method, path, strings.NewReader("{}"))
				req.Header.Set("Content-Type", "application/json")
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				return serve(t, a.srv.Handler(), req)
			}
			refused := map[string]string{
				"no token":        "",
				"garbage":         "not-a-jwt",
				"expired":         forge(secret, hs256, adminClaims(now.Add(-2*time.Hour), now.Add(-time.Hour))),
				"without exp":     forge(secret, hs256, noExp),
				"wrong typ":       forge(secret, map[string]any{"alg": "HS256", "typ": "at+jwt"}, adminClaims(now, now.Add(time.Hour))),
				"alg none":        forge(nil, map[string]any{"alg": "none", "typ": "JWT"}, adminClaims(now, now.Add(time.Hour))),
				"alg HS512":       forge(secret, map[string]any{"alg": "HS512", "typ": "JWT"}, adminClaims(now, now.Add(time.Hour))),
				"wrong audience":  issue(otherAud, auth.RoleAdmin, time.Hour),
				"wrong issuer":    issue(otherIss, auth.RoleAdmin, time.Hour),
				"another key":     issue(otherKey, auth.RoleAdmin, time.Hour),
				"not bearer auth": "",
			}
			for name, tok := range refused {
				w := send(tok)
				if name == "not bearer auth" {
					req := httptest.NewRequest(r.Method, path, nil)
					req.SetBasicAuth("admin", "admin")
					w = serve(t, a.srv.Handler(), req)
				}
				require.Equal(t, http.StatusUnauthorized, w.Code, "%s: %s", name, w.Body.String())
				require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"), name)
				require.NotEmpty(t, w.Header().Get("WWW-Authenticate"), name)
			}
			for _, role := range []auth.Role{auth.RoleViewer, auth.RoleOperator, auth.RoleAdmin} {
				w := send(issue(good, role, time.Hour))
				if role.Allows(need) {
					require.NotContains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, w.Code,
						"role %s passes the gate of %s: %s", role, key, w.Body.String())
					continue
				}
				require.Equal(t, http.StatusForbidden, w.Code, "role %s on %s: %s", role, key, w.Body.String())
				require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
			}
		})
	}
	for key := range routeRoles {
		require.True(t, seen[key], "routeRoles names %s, which is not registered", key)
	}
}
