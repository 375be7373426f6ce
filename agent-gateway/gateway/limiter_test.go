package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/ratelimit/ratelimittest"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// migratedStore is a store on the test's own Postgres database, migrated.
func migratedStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{AuditKey: testenv.AuditKey, URL: storetest.MigratedPostgres(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(context.Background())
	require.NoError(t, err)
	return st
}

func enrollMux(t *testing.T, st *store.Store, id string, l ratelimit.Limiter) *http.ServeMux {
	t.Helper()
	mux, _ := enrollGateway(t, st, Config{GatewayID: id, Limiter: l})
	return mux
}

// enrollGateway runs a gateway with cfg (and the bootstrap secret and an event
// publisher) on a memory bus, which it returns.
func enrollGateway(t *testing.T, st *store.Store, cfg Config) (*http.ServeMux, *bus.Memory) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	mem := bus.NewMemory()
	cfg.EnrollmentSecret, cfg.Events = "bootstrap-secret-0123", events.NewPublisher(mem, log)
	g, err := New(st, mem, mem, prometheus.NewRegistry(), log, cfg)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = g.Run(ctx) }()
	t.Cleanup(func() { stop(); <-stopped })
	mux := http.NewServeMux()
	g.Register(mux)
	return mux, mem
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
	st := migratedStore(t)
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
	st := migratedStore(t)
	// A refusal window far shorter than the test: the aggregated audit row
	// is written by the gateway's own flush loop.
	mux, _ := enrollGateway(t, st, Config{GatewayID: "gw-a", Limiter: brokenLimiter{}, RefusalWindow: 50 * time.Millisecond})
	require.Equal(t, http.StatusServiceUnavailable, postEnroll(mux, "bootstrap-secret-0123", "a1"))
	_, err := st.GetAgent(ctx, "a1")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Eventually(t, func() bool {
		n, err := st.CountAudit(ctx, "agent.enroll.denied")
		return err == nil && n == 1
	}, 5*time.Second, 20*time.Millisecond, "the refusal is audited once its window ends")
	n, err := st.CountAudit(ctx, "agent.enroll.denied")
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

// Every refused enrollment is published on the event stream with its reason.
func TestEnrollRefusalsArePublished(t *testing.T) {
	ctx := context.Background()
	st := migratedStore(t)
	mux, mem := enrollGateway(t, st, Config{GatewayID: "gw-a"})
	sub, err := mem.Subscribe(ctx, events.Topic)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	require.Equal(t, http.StatusCreated, postEnroll(mux, "bootstrap-secret-0123", "web-1"))
	require.Equal(t, http.StatusConflict, postEnroll(mux, "bootstrap-secret-0123", "web-1"))
	require.Equal(t, http.StatusUnauthorized, postEnroll(mux, "wrong", "web-2"))
	var got []events.Event
	for len(got) < 2 {
		select {
		case m := <-sub.Messages():
			evs, err := events.Decode(m.Payload)
			require.NoError(t, err)
			got = append(got, evs...)
		case <-time.After(5 * time.Second):
			t.Fatalf("events: %+v", got)
		}
	}
	require.Equal(t, events.AgentEnrollRefused, got[0].Type)
	require.Equal(t, "web-1", got[0].AgentID)
	require.Equal(t, refuseEnrolled, got[0].Reason)
	require.Equal(t, "gw-a", got[0].GatewayID)
	require.Equal(t, refuseBadSecret, got[1].Reason)
}
