package apiserver

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/api-server/apiserver/readcache"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
)

// The agent list is at most ReadCacheTTL stale, on real Postgres: a change
// nobody announces (a lost bus message) shows once the TTL since the cached
// read has passed, not before; an agent event on the bus shows at once, with
// the clock stopped; a change made through this replica shows at once.
func TestAgentListStalenessBound(t *testing.T) {
	ctx := context.Background()
	b := bus.NewMemory()
	a := newReadAPI(t, storetest.MigratedPostgres(t), b, Config{})
	clk := &testClock{now: time.Unix(1_000_000, 0)}
	a.srv.reads = readcache.New(readcache.Config{TTL: time.Second, Now: clk.Now})
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = a.srv.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })

	a.agent("a1", "lab", "gw1", nil, nil)
	status := func() string {
		t.Helper()
		w := a.get("/api/v1/agents")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		l := decode[List[AgentView]](t, w)
		require.Len(t, l.Items, 1)
		return l.Items[0].Status + "@" + l.Items[0].Site
	}
	require.Equal(t, "online@lab", status())

	// Lost message: the database changes, nothing is published.
	_, err := a.st.MarkAgentOffline(ctx, "a1", "s-a1", time.Now())
	require.NoError(t, err)
	require.Equal(t, "online@lab", status(), "held within the TTL")
	clk.add(999 * time.Millisecond)
	require.Equal(t, "online@lab", status(), "held within the TTL")
	clk.add(time.Millisecond)
	require.Equal(t, "offline@lab", status(), "read anew once the TTL has passed")

	// Announced: the gateway's agent.online event empties the cache.
	require.NoError(t, a.st.MarkAgentOnline(ctx, store.AgentSession{ID: "a1", GatewayID: "gw1", SessionID: "s-2", At: time.Now()}))
	require.Equal(t, "offline@lab", status(), "held: nothing announced it yet")
	pub := events.NewPublisher(b, logrus.New())
	require.Eventually(t, func() bool {
		pub.Agent(ctx, events.AgentOnline, "a1", "gw1", "")
		return status() == "online@lab"
	}, 10*time.Second, 10*time.Millisecond, "shown after the event, the clock stopped")

	// This replica's own change shows at once.
	w := a.do(auth.RoleAdmin, http.MethodPatch, "/api/v1/agents/a1", `{"site":"prod"}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Equal(t, "online@prod", status())
}
