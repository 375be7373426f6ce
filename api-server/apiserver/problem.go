package apiserver

import (
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/problem"
)

// FieldError names one invalid input field.
type FieldError = problem.FieldError

// Problem is an RFC 9457 problem document.
type Problem = problem.Document

func writeProblem(c *gin.Context, code int, detail string, errs []FieldError) {
	problem.Write(c.Writer, code, detail, c.Request.URL.Path, errs)
}

// require authenticates the bearer token and checks the role (deny by
// default). Anonymous failures are counted (viworks_api_auth_failures_total)
// and aggregated into one auth.failure audit event per client address and
// window, written off the request path; a principal refused for its role is
// audited at once (auth.denied).
func (s *Server) require(need auth.Role) gin.HandlerFunc {
	return func(c *gin.Context) {
		h := c.GetHeader("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || strings.TrimSpace(tok) == "" {
			s.authFailure(c, "no bearer token")
			c.Header("WWW-Authenticate", `Bearer realm="viworks"`)
			writeProblem(c, http.StatusUnauthorized, "a bearer token is required", nil)
			c.Abort()
			return
		}
		p, err := s.verifier.Verify(strings.TrimSpace(tok))
		if err != nil {
			s.authFailure(c, "invalid or expired token")
			c.Header("WWW-Authenticate", `Bearer realm="viworks", error="invalid_token"`)
			writeProblem(c, http.StatusUnauthorized, "the bearer token is invalid or expired", nil)
			c.Abort()
			return
		}
		revoked, err := s.revoked(c.Request.Context(), p)
		if err != nil {
			// Fail closed: a token whose revocation cannot be checked is not accepted.
			s.internalError(c, "checking token revocation failed", err)
			c.Abort()
			return
		}
		if revoked {
			// Counted and aggregated like the anonymous failures: replaying a
			// revoked token must not write to the audit chain per request.
			s.authFailure(c, "API key revoked")
			c.Header("WWW-Authenticate", `Bearer realm="viworks", error="invalid_token"`)
			writeProblem(c, http.StatusUnauthorized, "the bearer token was revoked", nil)
			c.Abort()
			return
		}
		if !s.limitPrincipal(c, p.Subject) {
			c.Abort()
			return
		}
		if !p.Role.Allows(need) {
			s.audit(c, p.Subject, "auth.denied", c.Request.Method+" "+c.FullPath(), map[string]any{"role": p.Role, "needs": need})
			writeProblem(c, http.StatusForbidden, "role "+string(p.Role)+" may not do this; it needs "+string(need), nil)
			c.Abort()
			return
		}
		if !s.conforms(c) {
			c.Abort()
			return
		}
		c.Set(ctxPrincipal, p)
		c.Next()
	}
}

// authFailure counts an anonymous request refused for its credentials.
func (s *Server) authFailure(c *gin.Context, reason string) {
	s.authFailures.WithLabelValues(reason).Inc()
	s.refusals.Record(c.ClientIP(), reason, c.Request.Method+" "+c.FullPath(), time.Now())
}

func principal(c *gin.Context) auth.Principal {
	p, _ := c.Get(ctxPrincipal)
	pr, _ := p.(auth.Principal)
	return pr
}
