package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/auth"
)

// testHost is the origin the document's router matches in tests.
const testHost = "example.test"

var docRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := OpenAPI()
	if err != nil {
		return nil, err
	}
	doc.Servers = openapi3.Servers{{URL: "http://" + testHost}}
	return gorillamux.NewRouter(doc)
})

// serve is the round-trip of every API test: it sends req to h and fails the
// test when the response is not one the document declares for the operation
// (status, content type, body schema), whatever the test then asserts.
// Requests outside the document (404 on no route, 405 on a method a path does
// not have) are only checked to be problem documents.
func serve(t testing.TB, h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	validateResponse(t, req, w)
	return w
}

func validateResponse(t testing.TB, req *http.Request, w *httptest.ResponseRecorder) {
	t.Helper()
	router, err := docRouter()
	require.NoError(t, err)
	at := req.Clone(context.Background())
	at.URL.Scheme, at.URL.Host, at.Host = "http", testHost, testHost
	route, params, err := router.FindRoute(at)
	if errors.Is(err, routers.ErrPathNotFound) || errors.Is(err, routers.ErrMethodNotAllowed) {
		require.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, w.Code,
			"%s %s is not in the document but answered %d: %s", req.Method, req.URL.Path, w.Code, w.Body.String())
		require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
		return
	}
	require.NoError(t, err, "%s %s", req.Method, req.URL)
	stream := strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream")
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: at, PathParams: params, Route: route},
		Status:                 w.Code, Header: w.Header(),
		Body:    io.NopCloser(bytes.NewReader(w.Body.Bytes())),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: stream},
	}
	require.NoError(t, openapi3filter.ValidateResponse(context.Background(), out),
		"the response %d to %s %s is not in the OpenAPI document: %s", w.Code, req.Method, req.URL, w.Body.String())
}

// documentedOperations lists the document's operations, path parameters
// filled in with a syntactically valid id nobody has.
func documentedOperations(t *testing.T) []struct{ method, path, template string } {
	doc, err := OpenAPI()
	require.NoError(t, err)
	var ops []struct{ method, path, template string }
	fill := regexp.MustCompile(`\{[^}]+\}`)
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, struct{ method, path, template string }{method, fill.ReplaceAllString(path, "0b7e5f43-5d3c-4c43-a6b6-3d0e3a7d6a11"), path})
		}
	}
	return ops
}

// TestEveryOperationHasAnOperationID: camelCase, unique, on every operation.
func TestEveryOperationHasAnOperationID(t *testing.T) {
	doc, err := OpenAPI()
	require.NoError(t, err)
	camel := regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)
	seen := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			key := method + " " + path
			require.Regexp(t, camel, op.OperationID, "%s needs a camelCase operationId", key)
			prev, dup := seen[op.OperationID]
			require.False(t, dup, "operationId %s of %s is also %s's", op.OperationID, key, prev)
			seen[op.OperationID] = key
		}
	}
}

// TestUnknownQueryParametersAre400: on every documented operation (the
// routes of the whole document, so new ones are covered), a query parameter
// the operation does not declare answers 400 naming it instead of being
// ignored (?stauts=failed used to list everything).
func TestUnknownQueryParametersAre400(t *testing.T) {
	a := newAlertAPI(t)
	for _, op := range documentedOperations(t) {
		t.Run(op.method+" "+op.template, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			req := httptest.NewRequestWithContext(ctx, op.method, op.path+"?stauts=failed", nil)
			req.Header.Set("Authorization", "Bearer "+a.tokens[auth.RoleAdmin])
			w := serve(t, a.srv.Handler(), req)
			fields := problemFields(t, w, http.StatusBadRequest)
			require.Equal(t, []string{"stauts"}, fields, w.Body.String())
		})
	}
	// Unauthenticated callers of protected operations are refused first.
	req := httptest.NewRequest(http.MethodGet, "/api/v1/commands?stauts=failed", nil)
	require.Equal(t, http.StatusUnauthorized, serve(t, a.srv.Handler(), req).Code)
}

// TestBodiesMustBeJSON: an operation that takes a JSON body refuses any other
// media type with 415 (it used to parse whatever it was sent).
func TestBodiesMustBeJSON(t *testing.T) {
	a := newAlertAPI(t)
	doc, err := OpenAPI()
	require.NoError(t, err)
	n := 0
	for _, op := range documentedOperations(t) {
		if doc.Paths.Find(op.template).GetOperation(op.method).RequestBody == nil {
			continue
		}
		n++
		for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx"} {
			t.Run(fmt.Sprintf("%s %s %q", op.method, op.template, ct), func(t *testing.T) {
				req := httptest.NewRequest(op.method, op.path, strings.NewReader(`{"verb":"echo"}`))
				if ct != "" {
					req.Header.Set("Content-Type", ct)
				}
				req.Header.Set("Authorization", "Bearer "+a.tokens[auth.RoleAdmin])
				problemFields(t, serve(t, a.srv.Handler(), req), http.StatusUnsupportedMediaType)
			})
		}
		req := httptest.NewRequest(op.method, op.path, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Authorization", "Bearer "+a.tokens[auth.RoleAdmin])
		require.NotEqual(t, http.StatusUnsupportedMediaType, serve(t, a.srv.Handler(), req).Code, "%s %s", op.method, op.template)
	}
	require.NotZero(t, n)
}

// TestUnknownQueryParametersAreBounded: a flood of unknown parameters costs a
// bounded answer.
func TestUnknownQueryParametersAreBounded(t *testing.T) {
	a := newAlertAPI(t)
	var q []string
	for i := range 500 {
		q = append(q, fmt.Sprintf("p%03d=x", i))
	}
	w := a.do(auth.RoleViewer, http.MethodGet, "/api/v1/agents?"+strings.Join(q, "&"), "")
	fields := problemFields(t, w, http.StatusBadRequest)
	require.Len(t, fields, maxUnknownParams)
	require.Equal(t, "p000", fields[0])
	require.Contains(t, decode[Problem](t, w).Detail, "500 unknown")
}
