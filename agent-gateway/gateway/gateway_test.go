package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

const secret = "gateway-test-enrollment-secret"

type fixture struct {
	store *store.Store
	reg   *prometheus.Registry
	srv   *httptest.Server
}

// start runs a gateway on real Postgres and Redis behind an httptest server.
func start(t testing.TB, cfg gateway.Config) fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: storetest.MigratedPostgres(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	redisURL, prefix := testenv.Redis(t)
	b, err := bus.NewRedis(ctx, bus.RedisConfig{URL: redisURL, KeyPrefix: prefix})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })

	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	reg := prometheus.NewRegistry()
	cfg.GatewayID, cfg.EnrollmentSecret = "gw-test", secret
	gw, err := gateway.New(st, b, b, reg, log, cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	gw.Register(mux)
	srv := httptest.NewServer(mux)
	done := make(chan struct{})
	go func() { defer close(done); _ = gw.Run(ctx) }()
	t.Cleanup(func() {
		gw.Shutdown(context.Background())
		srv.Close()
		cancel()
		<-done
	})
	return fixture{store: st, reg: reg, srv: srv}
}

func (f fixture) enroll(t testing.TB, agentID string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"enrollment_secret": secret, "agent_id": agentID, "hostname": "h-" + agentID})
	resp, err := http.Post(f.srv.URL+"/agent/v1/enroll", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var out struct{ Credential string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Credential
}

func (f fixture) dial(t testing.TB, credential string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + credential}}
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(f.srv.URL, "http")+"/ws/agent", h)
	require.NoError(t, err)
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func frame(t *testing.T, typ string, payload any) []byte {
	t.Helper()
	b, err := protocol.Encode(typ, "", payload)
	require.NoError(t, err)
	return b
}

// family returns the gathered metric family name (nil when it has no series).
func family(t *testing.T, reg *prometheus.Registry, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

// value is a counter's or gauge's value, or a histogram's sample count, for the
// series with the given label (name=value; empty for none).
func value(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	f := family(t, reg, name)
	if f == nil {
		return 0
	}
	for _, m := range f.GetMetric() {
		if label != "" {
			k, v, _ := strings.Cut(label, "=")
			match := false
			for _, lp := range m.GetLabel() {
				match = match || (lp.GetName() == k && lp.GetValue() == v)
			}
			if !match {
				continue
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

func TestSessionMetrics(t *testing.T) {
	// No periodic flush during the test: the telemetry batch is written because it
	// reached TelemetryBatch samples.
	f := start(t, gateway.Config{FlushInterval: time.Hour, TelemetryBatch: 2})
	ctx := context.Background()
	cred := f.enroll(t, "m-1")
	c := f.dial(t, cred)

	var sent int
	write := func(b []byte) {
		require.NoError(t, c.WriteMessage(websocket.TextMessage, b))
		sent += len(b)
	}
	write(frame(t, protocol.TypeHello, protocol.Hello{AgentID: "m-1", Version: "1.0", Hostname: "h-m-1", OS: "linux", Arch: "amd64"}))
	_, welcome, err := c.ReadMessage()
	require.NoError(t, err)
	require.Contains(t, string(welcome), `"type":"WELCOME"`)
	write(frame(t, protocol.TypeHeartbeat, protocol.Heartbeat{Status: protocol.HealthHealthy, UptimeS: 5}))
	for i := range 2 {
		write(frame(t, protocol.TypeTelemetry, protocol.Telemetry{TS: time.Now().Add(time.Duration(i) * time.Second), Metrics: map[string]float64{"cpu_percent": 12.5}}))
	}
	require.Eventually(t, func() bool {
		return value(t, f.reg, "viworks_gateway_telemetry_samples_stored_total", "") == 2
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")))
	require.Eventually(t, func() bool {
		return value(t, f.reg, "viworks_gateway_sessions_closed_total", "reason=agent_closed") == 1
	}, 10*time.Second, 20*time.Millisecond)

	require.Equal(t, 0.0, value(t, f.reg, "viworks_gateway_sessions", ""))
	for typ, n := range map[string]float64{protocol.TypeHello: 1, protocol.TypeHeartbeat: 1, protocol.TypeTelemetry: 2} {
		require.Equal(t, n, value(t, f.reg, "viworks_gateway_frames_received_total", "type="+typ), typ)
	}
	require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_frames_sent_total", "type=WELCOME"))
	require.Equal(t, float64(sent), value(t, f.reg, "viworks_gateway_received_bytes_total", ""))
	require.Equal(t, float64(len(welcome)), value(t, f.reg, "viworks_gateway_sent_bytes_total", ""))
	require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_handshake_duration_seconds", ""))
	require.GreaterOrEqual(t, value(t, f.reg, "viworks_gateway_flush_duration_seconds", "kind=telemetry"), 1.0)
	require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_group_batch_size", "group=online"))
	require.Equal(t, 1.0, value(t, f.reg, "viworks_gateway_group_batch_size", "group=audit"))

	// What the metrics count is what the database holds.
	a, err := f.store.GetAgent(ctx, "m-1")
	require.NoError(t, err)
	require.Equal(t, "h-m-1", a.Hostname)
	n, err := f.store.CountAudit(ctx, "agent.enroll")
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

// A fleet connecting at once is registered through the group commits: every
// agent ends online and audited.
func TestConnectStorm(t *testing.T) {
	f := start(t, gateway.Config{MaxConnections: 1000})
	ctx := context.Background()
	const agents = 60
	type result struct {
		c   *websocket.Conn
		err error
	}
	results := make(chan result, agents)
	for i := range agents {
		go func() {
			c, err := f.connect(fmt.Sprintf("storm-%d", i))
			results <- result{c, err}
		}()
	}
	for range agents {
		r := <-results
		require.NoError(t, r.err)
		t.Cleanup(func() { _ = r.c.Close() })
	}
	require.Equal(t, float64(agents), value(t, f.reg, "viworks_gateway_sessions", ""))
	online, err := f.store.ListAgents(ctx, store.AgentFilter{Status: store.AgentOnline, Limit: 1000})
	require.NoError(t, err)
	require.Len(t, online, agents)
	n, err := f.store.CountAudit(ctx, "agent.enroll")
	require.NoError(t, err)
	require.Equal(t, int64(agents), n)
	require.Equal(t, float64(agents), value(t, f.reg, "viworks_gateway_handshake_duration_seconds", ""))
}

// A burst past max_agent_connections: handshakes under way count against the
// capacity, so no more than the limit get a session, however many pass the
// check at once.
func TestConnectStormPastCapacity(t *testing.T) {
	const limit, agents = 20, 80
	f := start(t, gateway.Config{MaxConnections: limit})
	ctx := context.Background()
	creds := make([]string, agents)
	for i := range creds {
		creds[i] = f.enroll(t, fmt.Sprintf("cap-%d", i))
	}
	var wg sync.WaitGroup
	var admitted atomic.Int64
	gate := make(chan struct{})
	for i, cred := range creds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			var c *websocket.Conn
			// Like an agent: a storm's "busy" answer is retried, "no more
			// agents" (capacity) is final.
			for range 100 {
				conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(f.srv.URL, "http")+"/ws/agent", http.Header{"Authorization": {"Bearer " + cred}})
				if err == nil {
					_ = resp.Body.Close()
					c = conn
					break
				}
				require.NotNil(t, resp, err)
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
				if !strings.Contains(string(body), "connecting at once") {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			require.NotNil(t, c, "still busy after 100 attempts")
			t.Cleanup(func() { _ = c.Close() })
			hello, _ := protocol.Encode(protocol.TypeHello, "", protocol.Hello{AgentID: fmt.Sprintf("cap-%d", i), Version: "1", Hostname: "h"})
			if c.WriteMessage(websocket.TextMessage, hello) != nil {
				return
			}
			if _, msg, err := c.ReadMessage(); err == nil && strings.Contains(string(msg), `"type":"WELCOME"`) {
				admitted.Add(1)
			}
		}()
	}
	close(gate)
	wg.Wait()
	require.Equal(t, int64(limit), admitted.Load())
	require.Equal(t, float64(limit), value(t, f.reg, "viworks_gateway_sessions", ""))
	online, err := f.store.ListAgents(ctx, store.AgentFilter{Status: store.AgentOnline, Limit: 1000})
	require.NoError(t, err)
	require.Len(t, online, limit)
}

// connect enrolls id, opens its session and waits for WELCOME.
func (f fixture) connect(id string) (*websocket.Conn, error) {
	body, _ := json.Marshal(map[string]string{"enrollment_secret": secret, "agent_id": id})
	resp, err := http.Post(f.srv.URL+"/agent/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var out struct{ Credential string }
	err = json.NewDecoder(resp.Body).Decode(&out)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("enrolling %s: status %d: %v", id, resp.StatusCode, err)
	}
	h := http.Header{"Authorization": {"Bearer " + out.Credential}}
	c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(f.srv.URL, "http")+"/ws/agent", h)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", id, err)
	}
	_ = resp.Body.Close()
	hello, err := protocol.Encode(protocol.TypeHello, "", protocol.Hello{AgentID: id, Version: "1", Hostname: id})
	if err != nil {
		return nil, err
	}
	if err := c.WriteMessage(websocket.TextMessage, hello); err != nil {
		return nil, err
	}
	_, msg, err := c.ReadMessage()
	if err != nil {
		return nil, err
	}
	if !strings.Contains(string(msg), `"type":"WELCOME"`) {
		return nil, fmt.Errorf("%s: expected WELCOME, got %s", id, msg)
	}
	return c, nil
}

// A credential replaced by enrolling again no longer opens a session, even
// right after it was issued by this gateway.
func TestRotatedCredentialRefused(t *testing.T) {
	f := start(t, gateway.Config{})
	old := f.enroll(t, "rot-1")
	// Rotation: the agent proves its current credential for a new one.
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/agent/v1/enroll", strings.NewReader(`{"agent_id":"rot-1"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+old)
	rot, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusCreated, rot.StatusCode)
	_ = rot.Body.Close()
	h := http.Header{"Authorization": {"Bearer " + old}}
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(f.srv.URL, "http")+"/ws/agent", h)
	require.Error(t, err)
	require.NotNil(t, resp)
	defer resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// Frames the gateway refuses close the session with the proper code, and the
// close is counted by reason; an unknown type only gets an ERROR frame.
func TestRefusedFramesCloseAndCount(t *testing.T) {
	f := start(t, gateway.Config{ReadLimit: 4096})
	for _, tc := range []struct {
		name   string
		frame  []byte
		code   int
		reason string
	}{
		{"malformed", []byte(`{"type":"HEARTBEAT","payload":`), protocol.CloseInvalidPayload, "invalid_payload"},
		{"too big", []byte(`{"type":"TELEMETRY","payload":{"metrics":{"x":1},"pad":"` + strings.Repeat("x", 5000) + `"}}`), protocol.CloseMessageTooBig, "too_big"},
		{"second hello", frame(t, protocol.TypeHello, protocol.Hello{AgentID: "r-1", Version: "1", Hostname: "h"}), protocol.ClosePolicyViolation, "policy_violation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "r-" + strings.ReplaceAll(tc.name, " ", "-") // enrolling creates an identity once
			c := f.dial(t, f.enroll(t, id))
			require.NoError(t, c.WriteMessage(websocket.TextMessage, frame(t, protocol.TypeHello, protocol.Hello{AgentID: id, Version: "1", Hostname: "h"})))
			_, _, err := c.ReadMessage() // WELCOME
			require.NoError(t, err)
			require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(`{"type":"NOPE","payload":{}}`)))
			_, msg, err := c.ReadMessage()
			require.NoError(t, err)
			require.Contains(t, string(msg), `"type":"ERROR"`, "an unknown type keeps the session")
			require.NoError(t, c.WriteMessage(websocket.TextMessage, tc.frame))
			_, _, err = c.ReadMessage()
			require.True(t, websocket.IsCloseError(err, tc.code), "got %v", err)
			require.Eventually(t, func() bool {
				return value(t, f.reg, "viworks_gateway_sessions_closed_total", "reason="+tc.reason) == 1
			}, 5*time.Second, 10*time.Millisecond)
		})
	}
	// The writer counts a frame after writing it, so the agent may read the
	// last ERROR a moment before it is counted.
	require.Eventually(t, func() bool {
		return value(t, f.reg, "viworks_gateway_frames_sent_total", "type=ERROR") == 3
	}, 5*time.Second, 10*time.Millisecond, "one ERROR frame counted per unknown type")
}
