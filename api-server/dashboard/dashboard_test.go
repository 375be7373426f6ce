package dashboard

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func serve(t *testing.T, mux *http.ServeMux, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

func TestDashboardServesPageAndFiles(t *testing.T) {
	d, err := New(Config{})
	require.NoError(t, err)
	mux := http.NewServeMux()
	d.Register(mux)

	w := serve(t, mux, http.MethodGet, "/")
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "text/html; charset=utf-8", w.Header().Get("Content-Type"))
	require.Equal(t, CSP, w.Header().Get("Content-Security-Policy"))
	require.Equal(t, "nosniff", w.Header().Get("X-Content-Type-Options"))
	page := w.Body.String()
	// The first input of the page takes the credential.
	first := regexp.MustCompile(`<input[^>]*>`).FindString(page)
	require.Contains(t, first, `id="credential"`)
	require.Contains(t, page, `<a href="#/commands">Commands</a>`)
	// No inline script or style: the CSP would refuse them.
	require.NotRegexp(t, `<script(?:\s[^>]*)?>[^<]+</script>`, page)
	require.NotContains(t, page, "style=")
	require.NotContains(t, page, "<style")
	scripts := regexp.MustCompile(`src="(/ui/app\.js\?v=[0-9a-f]{12})"`).FindStringSubmatch(page)
	require.Len(t, scripts, 2, page)

	cases := []struct {
		method, path string
		code         int
		ctype        string
	}{
		{http.MethodGet, scripts[1], http.StatusOK, "text/javascript; charset=utf-8"},
		{http.MethodGet, "/ui/api.js", http.StatusOK, "text/javascript; charset=utf-8"},
		{http.MethodGet, "/ui/style.css", http.StatusOK, "text/css; charset=utf-8"},
		{http.MethodGet, "/ui/icon.svg", http.StatusOK, "image/svg+xml"},
		{http.MethodHead, "/", http.StatusOK, "text/html; charset=utf-8"},
		{http.MethodGet, "/ui/", http.StatusNotFound, ""},                // no listing
		{http.MethodGet, "/ui/index.html.tmpl", http.StatusNotFound, ""}, // not the template
		{http.MethodGet, "/dashboard.go", http.StatusNotFound, ""},
		{http.MethodGet, "/ui/nope.js", http.StatusNotFound, ""},
		{http.MethodGet, "/elsewhere", http.StatusNotFound, ""},
		{http.MethodPost, "/", http.StatusMethodNotAllowed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			w := serve(t, mux, tc.method, tc.path)
			require.Equal(t, tc.code, w.Code, w.Body.String())
			if tc.ctype != "" {
				require.Equal(t, tc.ctype, w.Header().Get("Content-Type"))
			}
			if tc.code == http.StatusOK || strings.HasPrefix(tc.path, "/ui/") {
				require.Equal(t, CSP, w.Header().Get("Content-Security-Policy"))
			}
		})
	}
}

func TestDashboardConfig(t *testing.T) {
	for _, p := range []string{"ui", "/ui", "/", "/api/ui/"} {
		_, err := New(Config{Prefix: p})
		require.Error(t, err, p)
	}
	d, err := New(Config{Prefix: "/console/", Title: "Fleet <&>"})
	require.NoError(t, err)
	mux := http.NewServeMux()
	d.Register(mux)
	w := serve(t, mux, http.MethodGet, "/")
	require.Contains(t, w.Body.String(), "Fleet &lt;&amp;&gt; dashboard")
	require.Contains(t, w.Body.String(), `src="/console/app.js?v=`)
	require.Equal(t, http.StatusOK, serve(t, mux, http.MethodGet, "/console/app.js").Code)
}

func TestCSPForbidsInlineCode(t *testing.T) {
	require.Contains(t, CSP, "script-src 'self';")
	require.Contains(t, CSP, "frame-ancestors 'none'")
	require.NotContains(t, CSP, "unsafe-inline")
	require.NotContains(t, CSP, "unsafe-eval")
}
