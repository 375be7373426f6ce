package apiserver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

// storeAnswer runs storeFailed on a fresh request and returns whether it
// answered and the recorder.
func storeAnswer(t *testing.T, r resource, err error) (bool, *httptest.ResponseRecorder) {
	t.Helper()
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	c.Request = httptest.NewRequest(http.MethodGet, "/api/v1/things", nil)
	answered := (&Server{}).storeFailed(c, r, "testing", err)
	c.Writer.WriteHeaderNow()
	return answered, w
}

// TestErrorTable checks each store sentinel's answer, also when the store
// wrapped it: status, detail, the field at fault and Retry-After.
func TestErrorTable(t *testing.T) {
	for _, tc := range []struct {
		name       string
		res        resource
		err        error
		status     int
		detail     string
		field      string
		retryAfter string
	}{
		{"not found", resAPIKey, store.ErrNotFound, 404, "no API key with this id", "", ""},
		{"not found, revoked agent", resRevokedAgent, store.ErrNotFound, 404, "no revoked agent with this id", "", ""},
		{"deliveries of a missing webhook", resDelivery.listing(), store.ErrNotFound, 404, "no webhook with this id", "", ""},
		{"bad cursor", resCommand.listing(), store.ErrBadCursor, 400, "invalid query parameters", "cursor", ""},
		{"limit, revoke", resEnrollmentSecret, store.ErrLimitReached, 422, fmt.Sprintf("at most %d enrollment secrets; revoke one first", store.MaxEnrollmentSecrets), "", ""},
		{"limit, delete", resWebhook, store.ErrLimitReached, 422, fmt.Sprintf("at most %d webhooks; delete one first", store.MaxWebhooks), "", ""},
		{"duplicate", resAlertRule, store.ErrDuplicate, 409, "another alert rule has this name", "name", ""},
		{"command final", resCommand, store.ErrCommandFinal, 409, "the command has already finished", "", ""},
		{"template not found, by name", resTemplate, store.ErrNotFound, 404, "no template with this name (or it was retired)", "", ""},
		{"template changed concurrently", resTemplate, store.ErrTemplateConflict, 409, "the template changed concurrently; retry", "", ""},
		{"schedule limit", resSchedule, store.ErrLimitReached, 422, fmt.Sprintf("at most %d schedules; delete one first", store.MaxSchedules), "", ""},
		{"too many labels", resAgent, store.ErrTooManyLabels, 422, fmt.Sprintf("the agent would have more than %d labels", protocol.MaxLabels), "labels", ""},
		{"no matching agents", resCommand, store.ErrNoMatchingAgents, 422, "no registered agent matches the selector", "selector", ""},
		{"no online agent", resCommand, store.ErrNoOnlineAgent, 422, "mode any needs a matching agent that is online; none is", "mode", ""},
		{"queue full", resCommand, store.ErrQueueFull, 429, "the command queue is full; retry later", "", "5"},
		{"too many points", resTelemetry, store.ErrTooManyPoints, 400, fmt.Sprintf("more than %d points; choose a larger step, a shorter range or fewer metrics", store.MaxTelemetryPoints), "step", ""},
		{"validation, write", resAlertRule, store.ValidationErrors{{Field: "params.seconds", Message: "too small"}}, 400, "invalid alert rule", "params.seconds", ""},
		{"validation, list", resAlert.listing(), store.ValidationErrors{{Field: "state", Message: "bad"}}, 400, "invalid query parameters", "state", ""},
	} {
		for _, wrapped := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s wrapped=%v", tc.name, wrapped), func(t *testing.T) {
				err := tc.err
				if wrapped {
					err = fmt.Errorf("doing the store's work: %w", err)
				}
				answered, w := storeAnswer(t, tc.res, err)
				require.True(t, answered)
				require.Equal(t, tc.status, w.Code)
				require.Equal(t, "application/problem+json", w.Header().Get("Content-Type"))
				require.Equal(t, tc.retryAfter, w.Header().Get("Retry-After"))
				p := decode[Problem](t, w)
				require.Equal(t, tc.status, p.Status)
				require.Equal(t, tc.detail, p.Detail)
				if tc.field == "" {
					require.Empty(t, p.Errors)
					return
				}
				require.Len(t, p.Errors, 1)
				require.Equal(t, tc.field, p.Errors[0].Field)
				require.NotEmpty(t, p.Errors[0].Message)
			})
		}
	}
	t.Run("nil is no answer", func(t *testing.T) {
		answered, w := storeAnswer(t, resAgent, nil)
		require.False(t, answered)
		require.Equal(t, http.StatusOK, w.Code)
		require.Empty(t, w.Body.String())
	})
}

// TestResourcesWordTheirLimits checks every resource with a store limit can
// word its 422 (a plural, a number and how to make room).
func TestResourcesWordTheirLimits(t *testing.T) {
	for _, r := range []resource{resAlertRule, resWebhook, resAPIKey, resEnrollmentSecret} {
		require.Positive(t, r.max, r.name)
		require.NotEmpty(t, r.plural, r.name)
		require.Contains(t, []string{"delete", "revoke"}, r.free, r.name)
	}
}
