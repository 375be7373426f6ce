package problem_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/problem"
)

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		detail string
		errs   []problem.FieldError
	}{
		{"plain", http.StatusServiceUnavailable, "retry later", nil},
		{"fields", http.StatusBadRequest, "invalid body", []problem.FieldError{{Field: "agent_id", Message: "1–128 bytes of A-Z a-z 0-9 . _ : -"}}},
		// Control characters, quotes and non-ASCII text stay valid JSON (a
		// Go-quoted string would not be).
		{"escapes", http.StatusUnauthorized, "bad \"secret\"\x01 ünïcode <tag>", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("Retry-After", "5")
			problem.Write(w, tc.status, tc.detail, "/x", tc.errs)
			require.Equal(t, tc.status, w.Code)
			require.Equal(t, problem.ContentType, w.Header().Get("Content-Type"))
			require.Equal(t, "5", w.Header().Get("Retry-After"))
			var d problem.Document
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &d))
			require.Equal(t, problem.New(tc.status, tc.detail, "/x", tc.errs), d)
			require.Equal(t, "about:blank", d.Type)
			require.Equal(t, http.StatusText(tc.status), d.Title)
		})
	}
}
