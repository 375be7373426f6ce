package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/ratelimit/ratelimittest"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func enrollMux(t *testing.T, st *store.Store, id string, l ratelimit.Limiter) *http.ServeMux {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	mem := bus.NewMemory()
	g, err := New(st, mem, mem, prometheus.NewRegistry(), log, Config{GatewayID: id, EnrollmentSecret: "bootstrap-secret-0123", Limiter: l})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = g.Run(ctx) }()
	t.Cleanup(func() { stop(); <-stopped })
	mux := http.NewServeMux()
	g.Register(mux)
	return mux
}

func postEnroll(mux *http.ServeMux, secret, agentID string) int {
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/agent/v1/enroll",
		strings.NewReader(`{"enrollment_secret":"`+secret+`","agent_id":"`+agentID+`"}`)))
	return w.Code
}

// Two gateways on one Redis share the failure budget of an address: guessing
// against both does not double the guesses.
func TestEnrollFailuresSharedByGateways(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	_, prefix := testenv.Redis(t)
	a := enrollMux(t, st, "gw-a", ratelimittest.NewRedis(t, prefix))
	b := enrollMux(t, st, "gw-b", ratelimittest.NewRedis(t, prefix))
	for i := range enrollFailLimit.Requests {
		mux := a
		if i%2 == 1 {
			mux = b
		}
		require.Equal(t, http.StatusUnauthorized, postEnroll(mux, "wrong-guess", "guess"), "guess %d", i)
	}
	for _, mux := range []*http.ServeMux{a, b} {
		// Blocked on both, even with the right secret.
		require.Equal(t, http.StatusTooManyRequests, postEnroll(mux, "bootstrap-secret-0123", "fresh"))
	}
}

type brokenLimiter struct{}

func (brokenLimiter) Allow(context.Context, string, ratelimit.Limit) (ratelimit.Result, error) {
	return ratelimit.Result{}, errors.New("redis down")
}

func (brokenLimiter) Peek(context.Context, string, ratelimit.Limit) (ratelimit.Result, error) {
	return ratelimit.Result{}, errors.New("redis down")
}

// When the shared limiter cannot count failures, enrollment fails closed: no
// secret is checked.
func TestEnrollFailsClosedWithoutLimiter(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: testenv.Postgres(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	mux := enrollMux(t, st, "gw-a", brokenLimiter{})
	require.Equal(t, http.StatusServiceUnavailable, postEnroll(mux, "bootstrap-secret-0123", "a1"))
	_, err = st.GetAgent(ctx, "a1")
	require.ErrorIs(t, err, store.ErrNotFound)
	n, err := st.CountAudit(ctx, "agent.enroll.denied")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}
