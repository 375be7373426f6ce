package dispatch_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
	"github.com/viworks/backend-agent/scheduler/dispatch"
)

type env struct {
	url   string
	store *store.Store
	bus   *bus.Redis
}

func newEnv(t *testing.T) env {
	t.Helper()
	ctx := context.Background()
	url := storetest.MigratedPostgres(t)
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	redisURL, prefix := testenv.Redis(t)
	b, err := bus.NewRedis(ctx, bus.RedisConfig{URL: redisURL, KeyPrefix: prefix})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return env{url: url, store: st, bus: b}
}

// clock is a controllable clock: real time plus an offset the test advances.
type clock struct{ offset atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

func quiet() logrus.FieldLogger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return l
}

func start(t *testing.T, e env, cfg dispatch.Config) (*dispatch.Scheduler, context.CancelFunc) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	cfg.Signer, err = signing.NewSigner(priv)
	require.NoError(t, err)
	s, err := dispatch.New(e.store, e.bus, e.bus, nil, quiet(), cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	var once sync.Once
	return s, func() { once.Do(stop) }
}

// gateway pretends to be gateway gw holding agentID's session.
func gateway(t *testing.T, e env, gw, agentID string) <-chan bus.Delivery {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, e.store.MarkAgentOnline(ctx, store.AgentSession{ID: agentID, Capabilities: []string{"echo"}, GatewayID: gw, SessionID: "s1", At: time.Now()}))
	_, err := e.bus.SetPresence(ctx, agentID, bus.Entry{GatewayID: gw, SessionID: "s1"}, time.Minute)
	require.NoError(t, err)
	sub, err := e.bus.Subscribe(ctx, bus.GatewayTopic(gw))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Close() })
	out := make(chan bus.Delivery, 16)
	go func() {
		for m := range sub.Messages() {
			if items, err := bus.DecodeDeliveries(m.Payload); err == nil {
				for _, d := range items {
					out <- d
				}
			}
		}
	}()
	return out
}

// settle bounds how long a test waits (wall time) for the scheduler's loops to
// act; the loops run every few milliseconds, but a CI machine running every
// package with -race at once can starve them for seconds. Where a test drives a
// fake clock, this bounds only the wait, not what is asserted.
const settle = 15 * time.Second

func next(t *testing.T, ch <-chan bus.Delivery) (protocol.Frame, bus.Delivery) {
	t.Helper()
	select {
	case d := <-ch:
		var env protocol.Envelope
		require.NoError(t, json.Unmarshal(d.Frame, &env))
		f, err := protocol.DecodeServerFrame(d.Frame)
		require.NoError(t, err)
		return f, d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
	}
	return protocol.Frame{}, bus.Delivery{}
}

func TestDispatchRetryAndTimeout(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	deliveries := gateway(t, e, "gw-t", "agent-1")
	clk := &clock{}
	start(t, e, dispatch.Config{SweepInterval: 20 * time.Millisecond, AckTimeout: time.Second, RetryDelay: time.Second, MaxRetryDelay: time.Second, Now: clk.Now})

	cmd, _, err := e.store.CreateCommand(ctx, store.NewCommand{Verb: "echo", Args: store.JSON(`{"message":"x"}`), Targeting: store.Targeting{AgentIDs: []string{"agent-1"}},
		TimeoutSeconds: 5, MaxRetries: 1, TTLSeconds: 3600, CreatedBy: "alice", Audit: store.AuditEvent{Actor: "alice", Action: "command.create"}})
	require.NoError(t, err)
	bus.NewSender(e.bus, quiet()).Wake(ctx, bus.Wake{Reason: bus.WakeCommand, CommandID: cmd.ID})

	f, d := next(t, deliveries)
	require.Equal(t, protocol.TypeCommand, f.Type)
	c := f.Payload.(*protocol.Command)
	require.Equal(t, "agent-1", c.AgentID)
	require.Equal(t, "alice", c.RequestedBy)
	require.Equal(t, "s1", d.SessionID)
	keys, err := e.store.SigningKeys(ctx)
	require.NoError(t, err)
	pub, err := signing.DecodePublicKey(keys[0].PublicKey)
	require.NoError(t, err)
	require.NoError(t, signing.NewVerifier(map[string]ed25519.PublicKey{keys[0].KeyID: pub}).Verify(*c), "the COMMAND is signed with the registered key")
	first := c.ExecutionID

	// No ACK: after the ack deadline (clock +2s) the execution is retried, on the
	// same execution id, once the backoff (up to 1s with jitter) has passed.
	clk.Advance(2 * time.Second)
	require.Eventually(t, func() bool {
		_, ex, err := e.store.GetCommand(ctx, cmd.ID)
		return err == nil && ex[0].Status == store.ExecRetrying
	}, settle, 10*time.Millisecond)
	// The safety-net tick dispatches it again once the backoff has passed.
	f, _ = next(t, deliveries)
	require.Equal(t, first, f.Payload.(*protocol.Command).ExecutionID)
	ok, err := e.store.AckExecution(ctx, first, "agent-1", time.Now())
	require.NoError(t, err)
	require.True(t, ok)

	// Running past timeout_seconds: timed_out and a CANCEL to the agent's gateway.
	clk.Advance(10 * time.Second)
	f, _ = next(t, deliveries)
	require.Equal(t, protocol.TypeCancel, f.Type)
	require.Equal(t, first, f.Payload.(*protocol.Cancel).ExecutionID)
	got, ex, err := e.store.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.CommandTimedOut, got.Status)
	require.Equal(t, 2, ex[0].Attempts)
}

func TestLeaderHandOverBetweenSchedulers(t *testing.T) {
	e := newEnv(t)
	cfg := dispatch.Config{SweepInterval: 20 * time.Millisecond}
	a, stopA := start(t, e, cfg)
	b, stopB := start(t, e, cfg)
	require.Eventually(t, func() bool { return a.Leading() != b.Leading() }, settle, 10*time.Millisecond, "exactly one leads")
	for range 10 {
		require.NotEqual(t, a.Leading(), b.Leading(), "never two leaders")
		time.Sleep(10 * time.Millisecond)
	}
	leader, other, stop := a, b, stopA
	if b.Leading() {
		leader, other, stop = b, a, stopB
	}
	stop()
	require.False(t, leader.Leading())
	require.Eventually(t, other.Leading, settle, 10*time.Millisecond, "the other replica takes over")
}

func TestStaleAgentMarkedOffline(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_ = gateway(t, e, "gw-dead", "agent-stale")
	clk := &clock{}
	start(t, e, dispatch.Config{SweepInterval: 20 * time.Millisecond, StaleAfter: time.Minute, Now: clk.Now})
	time.Sleep(100 * time.Millisecond)
	a, err := e.store.GetAgent(ctx, "agent-stale")
	require.NoError(t, err)
	require.Equal(t, store.AgentOnline, a.Status, "seen just now")
	clk.Advance(2 * time.Minute)
	require.Eventually(t, func() bool {
		a, err := e.store.GetAgent(ctx, "agent-stale")
		return err == nil && a.Status == store.AgentOffline
	}, settle, 10*time.Millisecond)
}

func TestLeaderPurgesExpiredIdempotencyKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, claimed, err := e.store.BeginIdempotent(ctx, "alice", "old", "h", time.Minute)
	require.NoError(t, err)
	require.True(t, claimed)
	_, claimed, err = e.store.BeginIdempotent(ctx, "alice", "fresh", "h", 48*time.Hour)
	require.NoError(t, err)
	require.True(t, claimed)
	clk := &clock{}
	clk.Advance(time.Hour) // "old" has expired, "fresh" has not
	start(t, e, dispatch.Config{SweepInterval: 20 * time.Millisecond, RetentionInterval: 20 * time.Millisecond, Now: clk.Now})
	// Until purged, "old" is still unexpired by the real clock and cannot be
	// claimed again; the leader's clock runs an hour ahead and purges it.
	require.Eventually(t, func() bool {
		_, claimed, err := e.store.BeginIdempotent(ctx, "alice", "old", "h", time.Minute)
		return err == nil && claimed
	}, 5*time.Second, 20*time.Millisecond)
	_, claimed, err = e.store.BeginIdempotent(ctx, "alice", "fresh", "h", time.Minute)
	require.NoError(t, err)
	require.False(t, claimed, "an unexpired key is kept")
}

// TestSealedArgsReachTheAgentAndArePurged: a command whose password is sealed
// at rest is dispatched with the plaintext in a validly signed COMMAND (the
// agent needs it), and once the command is final the leader purges the
// ciphertext from the database.
func TestSealedArgsReachTheAgentAndArePurged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	deliveries := gateway(t, e, "gw-s", "agent-s")
	raw := make([]byte, argseal.KeySize)
	_, _ = rand.Read(raw)
	keys, err := argseal.NewKeyring(hex.EncodeToString(raw))
	require.NoError(t, err)
	start(t, e, dispatch.Config{SweepInterval: 20 * time.Millisecond, Args: keys})

	sealed, ok, err := keys.Seal([]byte(`{"username":"ops","password":"hunter2-plain"}`))
	require.NoError(t, err)
	require.True(t, ok)
	cmd, _, err := e.store.CreateCommand(ctx, store.NewCommand{Verb: "echo", Args: store.JSON(sealed), ArgsSealed: true,
		Targeting: store.Targeting{AgentIDs: []string{"agent-s"}}, TimeoutSeconds: 30, TTLSeconds: 3600, CreatedBy: "alice",
		Audit: store.AuditEvent{Actor: "alice", Action: "command.create"}})
	require.NoError(t, err)
	db, err := sql.Open("pgx", e.url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	stored := func() (string, bool) {
		var args string
		var flag bool
		require.NoError(t, db.QueryRowContext(ctx, `SELECT args::text, args_sealed FROM commands WHERE id = $1`, cmd.ID).Scan(&args, &flag))
		return args, flag
	}
	args, flag := stored()
	require.True(t, flag)
	require.NotContains(t, args, "hunter2")
	bus.NewSender(e.bus, quiet()).Wake(ctx, bus.Wake{Reason: bus.WakeCommand, CommandID: cmd.ID})

	f, _ := next(t, deliveries)
	require.Equal(t, protocol.TypeCommand, f.Type)
	c := f.Payload.(*protocol.Command)
	require.JSONEq(t, `{"username":"ops","password":"hunter2-plain"}`, string(c.Args), "the agent gets the plaintext")
	signingKeys, err := e.store.SigningKeys(ctx)
	require.NoError(t, err)
	pub, err := signing.DecodePublicKey(signingKeys[0].PublicKey)
	require.NoError(t, err)
	require.NoError(t, signing.NewVerifier(map[string]ed25519.PublicKey{signingKeys[0].KeyID: pub}).Verify(*c), "signed over the plaintext args")

	// Still in flight: the ciphertext stays (a retry needs it).
	time.Sleep(100 * time.Millisecond)
	_, flag = stored()
	require.True(t, flag)

	_, _, err = e.store.RecordResult(ctx, store.Result{ExecutionID: c.ExecutionID, AgentID: "agent-s", Status: store.ExecSucceeded, FinishedAt: time.Now()})
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, flag := stored(); return !flag }, 5*time.Second, 20*time.Millisecond, "purged once final")
	args, _ = stored()
	require.NotContains(t, args, "v1:", "no ciphertext left")
	require.JSONEq(t, `{"username":"ops","password":{"$sealed":"purged"}}`, args)
}

// TestSealedArgsWithoutKeyAreNotDispatched: a scheduler without the key
// cannot open sealed args and sends nothing (never the envelopes).
func TestSealedArgsWithoutKeyAreNotDispatched(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	deliveries := gateway(t, e, "gw-n", "agent-n")
	raw := make([]byte, argseal.KeySize)
	_, _ = rand.Read(raw)
	keys, err := argseal.NewKeyring(hex.EncodeToString(raw))
	require.NoError(t, err)
	start(t, e, dispatch.Config{SweepInterval: 20 * time.Millisecond})
	sealed, _, err := keys.Seal([]byte(`{"password":"p"}`))
	require.NoError(t, err)
	cmd, _, err := e.store.CreateCommand(ctx, store.NewCommand{Verb: "echo", Args: store.JSON(sealed), ArgsSealed: true,
		Targeting: store.Targeting{AgentIDs: []string{"agent-n"}}, TimeoutSeconds: 30, TTLSeconds: 3600, CreatedBy: "alice",
		Audit: store.AuditEvent{Actor: "alice", Action: "command.create"}})
	require.NoError(t, err)
	bus.NewSender(e.bus, quiet()).Wake(ctx, bus.Wake{Reason: bus.WakeCommand, CommandID: cmd.ID})
	select {
	case d := <-deliveries:
		t.Fatalf("a COMMAND was sent: %s", d.Frame)
	case <-time.After(500 * time.Millisecond):
	}
}
