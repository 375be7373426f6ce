package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// stormGateway is one gateway process of the reconnect storm: started on a
// shared store and bus, stopped as a restart stops it (Shutdown, then Run
// ends).
type stormGateway struct {
	gw   *gateway.Gateway
	reg  *prometheus.Registry
	srv  *httptest.Server
	stop func()
}

func startStormGateway(t *testing.T, st *store.Store, b *bus.Redis) *stormGateway {
	t.Helper()
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	reg := prometheus.NewRegistry()
	gw, err := gateway.New(st, b, b, reg, log, gateway.Config{GatewayID: "gw-storm", EnrollmentSecret: secret, MaxConnections: 5000})
	require.NoError(t, err)
	mux := http.NewServeMux()
	gw.Register(mux)
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = gw.Run(ctx) }()
	var once sync.Once
	g := &stormGateway{gw: gw, reg: reg, srv: srv}
	g.stop = func() {
		once.Do(func() {
			gw.Shutdown(context.Background())
			srv.CloseClientConnections()
			srv.Close()
			cancel()
			<-done
		})
	}
	t.Cleanup(g.stop)
	return g
}

// stormConnect opens id's session with its credential and waits for WELCOME,
// retrying (as agents do) while the gateway answers 503 to admit the storm at
// the rate the database sustains. It returns the session id WELCOME names.
func stormConnect(ctx context.Context, url, id, cred string) (*websocket.Conn, string, error) {
	h := http.Header{"Authorization": {"Bearer " + cred}}
	for {
		c, resp, err := websocket.DefaultDialer.DialContext(ctx, "ws"+strings.TrimPrefix(url, "http")+"/ws/agent", h)
		if resp != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			if resp != nil && resp.StatusCode == http.StatusServiceUnavailable && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return nil, "", fmt.Errorf("dialing %s: %w", id, err)
		}
		hello, err := protocol.Encode(protocol.TypeHello, "", protocol.Hello{AgentID: id, Version: "1", Hostname: id})
		if err != nil {
			return nil, "", err
		}
		if err := c.WriteMessage(websocket.TextMessage, hello); err != nil {
			return nil, "", err
		}
		_, msg, err := c.ReadMessage()
		if err != nil {
			return nil, "", fmt.Errorf("%s: reading WELCOME: %w", id, err)
		}
		var f struct {
			Type    string
			Payload struct {
				SessionID string `json:"session_id"`
			}
		}
		if err := json.Unmarshal(msg, &f); err != nil || f.Type != protocol.TypeWelcome {
			return nil, "", fmt.Errorf("%s: expected WELCOME, got %s", id, msg)
		}
		return c, f.Payload.SessionID, nil
	}
}

// A fleet of 2,000 agents reconnecting at once to its restarted gateway all
// come online again: every agent's row names the session its WELCOME named,
// on this gateway, and its presence in Redis is that session. The credential
// lookups and HELLO upserts go through the group commits (batches of more
// than one), not one round trip per agent.
func TestReconnectStormAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 sessions")
	}
	const agents = 2000
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: storetest.MigratedPostgres(t), MaxConns: 20})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	redisURL, prefix := testenv.Redis(t)
	b, err := bus.NewRedis(ctx, bus.RedisConfig{URL: redisURL, KeyPrefix: prefix})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })

	// The fleet enrolls and connects to the first gateway process.
	first := startStormGateway(t, st, b)
	ids, creds := make([]string, agents), make([]string, agents)
	for i := range agents {
		ids[i] = fmt.Sprintf("storm-%04d", i)
		creds[i] = fmt.Sprintf("storm-credential-%04d-0123456789abcdefghijklmnopqrstuvwxyz", i)
		require.NoError(t, st.EnrollBootstrap(ctx, ids[i], gateway.HashCredential(creds[i]), 0, time.Now()))
	}
	connectAll := func(url string) ([]*websocket.Conn, []string) {
		conns, sessions := make([]*websocket.Conn, agents), make([]string, agents)
		errs := make([]error, agents)
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for i := range agents {
			wg.Go(func() { conns[i], sessions[i], errs[i] = stormConnect(cctx, url, ids[i], creds[i]) })
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
		return conns, sessions
	}
	conns, _ := connectAll(first.srv.URL)
	require.Equal(t, float64(agents), value(t, first.reg, "viworks_gateway_sessions", ""))

	// The gateway restarts: its sessions end with 1012, and the whole fleet
	// reconnects at once to the new process.
	first.stop()
	for _, c := range conns {
		_ = c.Close()
	}
	second := startStormGateway(t, st, b)
	conns, sessions := connectAll(second.srv.URL)
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})

	require.Equal(t, float64(agents), value(t, second.reg, "viworks_gateway_sessions", ""))
	var rows []store.Agent
	for after := ""; ; {
		page, err := st.ListAgents(ctx, store.AgentFilter{IDPrefix: "storm-", Limit: 500, After: after})
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		rows, after = append(rows, page...), page[len(page)-1].ID
	}
	require.Len(t, rows, agents)
	got, err := b.LookupPresence(ctx, ids)
	require.NoError(t, err)
	for i, r := range rows {
		require.Equal(t, ids[i], r.ID)
		require.Equal(t, store.AgentOnline, r.Status, r.ID)
		require.Equal(t, "gw-storm", r.GatewayID, r.ID)
		require.Equal(t, sessions[i], r.SessionID, "%s: the row names the session WELCOME named", r.ID)
		require.Equal(t, bus.Entry{GatewayID: "gw-storm", SessionID: sessions[i]}, got[ids[i]], r.ID)
	}
	// Batched: fewer credential lookups and online writes than agents.
	for _, group := range []string{"credential", "online"} {
		writes := value(t, second.reg, "viworks_gateway_group_batch_size", "group="+group)
		require.Less(t, writes, float64(agents), group)
	}
}
