package apiserver

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/auth"
)

// FieldError names one invalid input field.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
}

func writeProblem(c *gin.Context, code int, detail string, errs []FieldError) {
	p := Problem{Type: "about:blank", Title: http.StatusText(code), Status: code, Detail: detail, Instance: c.Request.URL.Path, Errors: errs}
	c.Header("Content-Type", "application/problem+json")
	c.Status(code)
	_ = jsonEncode(c.Writer, p)
}

// require authenticates the bearer token and checks the role (deny by default).
func (s *Server) require(need auth.Role) gin.HandlerFunc {
	return func(c *gin.Context) {
		h := c.GetHeader("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || strings.TrimSpace(tok) == "" {
			c.Header("WWW-Authenticate", `Bearer realm="viworks"`)
			writeProblem(c, http.StatusUnauthorized, "a bearer token is required", nil)
			c.Abort()
			return
		}
		p, err := s.verifier.Verify(strings.TrimSpace(tok))
		if err != nil {
			c.Header("WWW-Authenticate", `Bearer realm="viworks", error="invalid_token"`)
			writeProblem(c, http.StatusUnauthorized, "the bearer token is invalid or expired", nil)
			c.Abort()
			return
		}
		if !p.Role.Allows(need) {
			writeProblem(c, http.StatusForbidden, "role "+string(p.Role)+" may not do this; it needs "+string(need), nil)
			c.Abort()
			return
		}
		c.Set(ctxPrincipal, p)
		c.Next()
	}
}

func principal(c *gin.Context) auth.Principal {
	p, _ := c.Get(ctxPrincipal)
	pr, _ := p.(auth.Principal)
	return pr
}
