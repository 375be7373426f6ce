package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return l
}

// buses runs fn on the in-process bus and on Redis: the hub behaves the same on both.
func buses(t *testing.T, fn func(t *testing.T, b bus.Bus)) {
	t.Run("memory", func(t *testing.T) {
		b := bus.NewMemory()
		t.Cleanup(func() { _ = b.Close() })
		fn(t, b)
	})
	t.Run("redis", func(t *testing.T) {
		url, prefix := testenv.Redis(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, err := bus.NewRedis(ctx, bus.RedisConfig{URL: url, KeyPrefix: prefix})
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.Close() })
		fn(t, b)
	})
}

func startHub(t *testing.T, b bus.Bus, cfg events.HubConfig) *events.Hub {
	t.Helper()
	h := events.NewHub(b, quietLog(), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-h.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("hub never subscribed")
	}
	return h
}

func next(t *testing.T, c *events.Client) events.Event {
	t.Helper()
	select {
	case e, ok := <-c.C:
		require.True(t, ok, "stream closed")
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	return events.Event{}
}

func TestHubFiltersAndFansOut(t *testing.T) {
	buses(t, func(t *testing.T, b bus.Bus) {
		h := startHub(t, b, events.HubConfig{})
		all, err := h.Subscribe("alice", events.Filter{})
		require.NoError(t, err)
		agentOnly, err := h.Subscribe("alice", events.Filter{AgentID: "a-2"})
		require.NoError(t, err)
		typed, err := h.Subscribe("alice", events.Filter{Types: map[string]bool{events.CommandStatus: true}, CommandID: "c-1"})
		require.NoError(t, err)

		p := events.NewPublisher(b, quietLog())
		p.Publish(context.Background(),
			events.Event{Type: events.AgentOnline, AgentID: "a-1"},
			events.Event{Type: events.ExecutionStatus, AgentID: "a-2", CommandID: "c-1", Status: "running"},
			events.Event{Type: events.CommandStatus, CommandID: "c-2", Status: "running"},
			events.Event{Type: events.CommandStatus, CommandID: "c-1", Status: "succeeded"},
		)

		got := []string{next(t, all).Type, next(t, all).Type, next(t, all).Type, next(t, all).Type}
		require.Equal(t, []string{events.AgentOnline, events.ExecutionStatus, events.CommandStatus, events.CommandStatus}, got)
		e := next(t, agentOnly)
		require.Equal(t, "running", e.Status)
		require.False(t, e.At.IsZero(), "publisher stamps the time")
		e = next(t, typed)
		require.Equal(t, "c-1", e.CommandID)
		require.Equal(t, "succeeded", e.Status)
		select {
		case e := <-typed.C:
			t.Fatalf("filtered client got %+v", e)
		case <-time.After(200 * time.Millisecond):
		}
	})
}

func TestHubDropsSlowClientAndLimitsClients(t *testing.T) {
	buses(t, func(t *testing.T, b bus.Bus) {
		h := startHub(t, b, events.HubConfig{Buffer: 2, MaxClients: 2})
		slow, err := h.Subscribe("alice", events.Filter{})
		require.NoError(t, err)
		_, err = h.Subscribe("alice", events.Filter{})
		require.NoError(t, err)
		_, err = h.Subscribe("alice", events.Filter{})
		require.ErrorIs(t, err, events.ErrTooManyClients)

		evs := make([]events.Event, 5)
		for i := range evs {
			evs[i] = events.Event{Type: events.AgentOnline, AgentID: "a"}
		}
		events.NewPublisher(b, quietLog()).Publish(context.Background(), evs...)
		require.Eventually(t, func() bool { return h.Clients() == 0 }, 5*time.Second, 10*time.Millisecond)
		n := 0
		for range slow.C {
			n++
		}
		require.Equal(t, 2, n, "the buffered events, then the stream ends")
		h.Unsubscribe(slow) // after the drop: no double close
	})
}

func TestHubCloseEndsStreams(t *testing.T) {
	b := bus.NewMemory()
	t.Cleanup(func() { _ = b.Close() })
	h := startHub(t, b, events.HubConfig{})
	c, err := h.Subscribe("alice", events.Filter{})
	require.NoError(t, err)
	h.Close()
	_, ok := <-c.C
	require.False(t, ok)
	_, err = h.Subscribe("alice", events.Filter{})
	require.ErrorIs(t, err, events.ErrHubClosed)
}

func TestDecodeRejectsGarbage(t *testing.T) {
	_, err := events.Decode([]byte("{not json"))
	require.Error(t, err)
	evs, err := events.Decode(events.Encode([]events.Event{{Type: events.AlertFired, AlertID: "x"}}))
	require.NoError(t, err)
	require.Equal(t, "x", evs[0].AlertID)
}

func TestNilPublisherDiscards(t *testing.T) {
	var p *events.Publisher
	require.NotPanics(t, func() { p.Publish(context.Background(), events.Event{Type: events.AgentOnline}) })
}

func TestHubLimitsClientsPerOwner(t *testing.T) {
	b := bus.NewMemory()
	t.Cleanup(func() { _ = b.Close() })
	h := startHub(t, b, events.HubConfig{MaxClients: 10, MaxPerOwner: 2})
	a1, err := h.Subscribe("alice", events.Filter{})
	require.NoError(t, err)
	_, err = h.Subscribe("alice", events.Filter{})
	require.NoError(t, err)
	_, err = h.Subscribe("alice", events.Filter{})
	require.ErrorIs(t, err, events.ErrTooManyForOwner)
	_, err = h.Subscribe("bob", events.Filter{})
	require.NoError(t, err, "another owner is still served")
	h.Unsubscribe(a1)
	_, err = h.Subscribe("alice", events.Filter{})
	require.NoError(t, err, "a closed stream frees its owner's slot")
}
