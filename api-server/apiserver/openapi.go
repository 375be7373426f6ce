package apiserver

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gin-gonic/gin"
)

//go:embed openapi.yaml
var openapiYAML []byte

// OpenAPI returns the API's OpenAPI 3 document, loaded and validated.
func OpenAPI() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openapiYAML)
	if err != nil {
		return nil, fmt.Errorf("loading the OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validating the OpenAPI document: %w", err)
	}
	return doc, nil
}

// openapiJSON renders the document for GET /api/v1/openapi.json, once per
// process however many servers it builds.
var openapiJSON = sync.OnceValues(func() ([]byte, error) {
	doc, err := OpenAPI()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding the OpenAPI document: %w", err)
	}
	return b, nil
})

func (s *Server) openapi(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", s.openapiDoc)
}

// maxUnknownParams bounds the unknown query parameters a 400 names.
const maxUnknownParams = 16

// operation is what the server enforces of one documented operation.
type operation struct {
	query     map[string]bool // declared query parameters
	bodyTypes []string        // media types of the request body; nil: no body declared
	public    bool            // needs no token (security: [])
}

// operations indexes the document's operations by "METHOD /gin/path", once
// per process: a route is held to the document as soon as it declares it
// (TestOpenAPIDocumentMatchesRoutes sees that every route is declared).
var operations = sync.OnceValues(func() (map[string]operation, error) {
	doc, err := OpenAPI()
	if err != nil {
		return nil, err
	}
	ops := map[string]operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			o := operation{query: map[string]bool{}, public: op.Security != nil && len(*op.Security) == 0}
			for _, params := range []openapi3.Parameters{item.Parameters, op.Parameters} {
				for _, p := range params {
					if p.Value != nil && p.Value.In == openapi3.ParameterInQuery {
						o.query[p.Value.Name] = true
					}
				}
			}
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for mt := range op.RequestBody.Value.Content {
					o.bodyTypes = append(o.bodyTypes, mt)
				}
				sort.Strings(o.bodyTypes)
			}
			ops[method+" "+openAPIToGin(path)] = o
		}
	}
	return ops, nil
})

// openAPIToGin turns /agents/{id} into gin's /agents/:id.
func openAPIToGin(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			parts[i] = ":" + s[1:len(s)-1]
		}
	}
	return strings.Join(parts, "/")
}

// conform holds a request to its operation in the document: a query
// parameter the operation does not declare answers 400 naming it (a typo such
// as ?stauts=failed must not silently widen a query), and a body of a media
// type the operation does not take answers 415. Operations without a token
// are checked here, before their handlers; the others in require, once the
// caller is authenticated and allowed (deny first, whatever the request).
func (s *Server) conform(c *gin.Context) {
	if op, ok := s.ops[c.Request.Method+" "+c.FullPath()]; ok && op.public && !s.conforms(c) {
		c.Abort()
		return
	}
	c.Next()
}

// conforms checks the request against its operation; it reports whether the
// request may go on (it wrote the problem otherwise).
func (s *Server) conforms(c *gin.Context) bool {
	op, ok := s.ops[c.Request.Method+" "+c.FullPath()]
	if !ok { // unmatched routes answer 404/405 on their own
		return true
	}
	var unknown []string
	for name := range c.Request.URL.Query() {
		if !op.query[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		errs := make([]FieldError, 0, min(len(unknown), maxUnknownParams))
		for _, name := range unknown[:min(len(unknown), maxUnknownParams)] {
			errs = append(errs, FieldError{Field: name, Message: "unknown query parameter"})
		}
		writeProblem(c, http.StatusBadRequest, fmt.Sprintf("%d unknown query parameters", len(unknown)), errs)
		return false
	}
	if op.bodyTypes != nil && c.Request.ContentLength != 0 {
		mt, _, err := mime.ParseMediaType(c.GetHeader("Content-Type"))
		if err != nil || !slices.Contains(op.bodyTypes, mt) {
			writeProblem(c, http.StatusUnsupportedMediaType, "the request body must be "+strings.Join(op.bodyTypes, " or "), nil)
			return false
		}
	}
	return true
}
