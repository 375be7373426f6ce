// Package bustest is a conformance suite for implementations of bus.Bus and
// bus.Presence. An implementation's test calls Run with a constructor:
//
//	func TestConformance(t *testing.T) { bustest.Run(t, newMyBus) }
//
// newBus is called once per subtest (with the subtest's t) and must return a bus
// in a namespace of its own (for Redis: a fresh key prefix), so subtests never
// see each other's topics or presence entries. The constructor registers its
// own cleanup (closing the bus) with t.Cleanup.
package bustest

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
)

// BusPresence is what an implementation under test provides.
type BusPresence interface {
	bus.Bus
	bus.Presence
}

// Timeouts used by the suite.
const (
	// ReceiveTimeout bounds the wait for an expected message.
	ReceiveTimeout = 5 * time.Second
	// QuietPeriod is how long the suite waits to conclude that no message arrives.
	QuietPeriod = 300 * time.Millisecond
	// ShortTTL is the presence TTL used to check expiry.
	ShortTTL = 200 * time.Millisecond
)

// Run runs the conformance suite against the buses newBus returns.
func Run(t *testing.T, newBus func(t *testing.T) interface {
	bus.Bus
	bus.Presence
}) {
	t.Helper()
	nb := func(t *testing.T) BusPresence {
		t.Helper()
		b := newBus(t)
		require.NotNil(t, b, "newBus returned nil")
		return b
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, b BusPresence)
	}{
		{"Ping", testPing},
		{"PublishWithoutSubscribers", testPublishWithoutSubscribers},
		{"PublishDeliversToEverySubscriber", testPublishDelivers},
		{"PayloadsAreDeliveredIntact", testPayloads},
		{"SubscribeToSeveralTopics", testSeveralTopics},
		{"TopicsAreIsolated", testTopicIsolation},
		{"CloseSubscriptionClosesMessages", testCloseSubscription},
		{"PresenceSetReturnsPrevious", testPresenceSet},
		{"PresenceLookupReturnsOnlyPresent", testPresenceLookup},
		{"PresenceRefreshOnlyForSameSession", testPresenceRefresh},
		{"PresenceRefreshExtendsTTL", testPresenceRefreshExtends},
		{"PresenceRefreshManyReportsEach", testPresenceRefreshMany},
		{"PresenceDeleteIsCompareAndDelete", testPresenceDelete},
		{"PresenceTTLExpiry", testPresenceTTL},
		{"SenderMessagesArriveTyped", testSender},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, nb(t))
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func subscribe(t *testing.T, ctx context.Context, b bus.Bus, topics ...string) bus.Subscription {
	t.Helper()
	s, err := b.Subscribe(ctx, topics...)
	require.NoError(t, err)
	require.NotNil(t, s)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// receive waits for the next message of s.
func receive(t *testing.T, s bus.Subscription) bus.Message {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		require.True(t, ok, "Messages() closed while a message was expected")
		return m
	case <-time.After(ReceiveTimeout):
		t.Fatalf("no message within %s", ReceiveTimeout)
	}
	return bus.Message{}
}

// quiet checks that s receives nothing during QuietPeriod.
func quiet(t *testing.T, s bus.Subscription) {
	t.Helper()
	select {
	case m, ok := <-s.Messages():
		if ok {
			t.Fatalf("unexpected message on %q: %q", m.Topic, m.Payload)
		}
		t.Fatalf("Messages() closed unexpectedly")
	case <-time.After(QuietPeriod):
	}
}

func requireMessage(t *testing.T, m bus.Message, topic string, payload []byte) {
	t.Helper()
	require.Equal(t, topic, m.Topic, "the message carries the relative topic name")
	require.True(t, bytes.Equal(payload, m.Payload), "payload %q, want %q", m.Payload, payload)
}

func testPing(t *testing.T, b BusPresence) {
	require.NoError(t, b.Ping(ctxFor(t)))
}

func testPublishWithoutSubscribers(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	for _, topic := range []string{bus.TopicScheduler, bus.GatewayTopic("gw-nobody"), "nobody-listens"} {
		n, err := b.Publish(ctx, topic, []byte("hello"))
		require.NoError(t, err, topic)
		require.Equal(t, 0, n, "subscribers counted on %q", topic)
	}
}

func testPublishDelivers(t *testing.T, b BusPresence) {
	cases := []struct {
		topic       string
		subscribers int
	}{
		{bus.TopicScheduler, 1},
		{bus.GatewayTopic("gw-1"), 2},
		{"with:several:colons", 3},
		{"ünïcode-topic", 2},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%d", tc.topic, tc.subscribers), func(t *testing.T) {
			ctx := ctxFor(t)
			subs := make([]bus.Subscription, tc.subscribers)
			for i := range subs {
				subs[i] = subscribe(t, ctx, b, tc.topic)
			}
			payload := []byte(`{"reason":"command","command_id":"` + tc.topic + `"}`)
			n, err := b.Publish(ctx, tc.topic, payload)
			require.NoError(t, err)
			require.Equal(t, tc.subscribers, n, "Publish returns the number of subscribers")
			for _, s := range subs {
				requireMessage(t, receive(t, s), tc.topic, payload)
			}
			for _, s := range subs {
				quiet(t, s)
			}
		})
	}
}

func testPayloads(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	const topic = "payloads"
	s := subscribe(t, ctx, b, topic)
	payloads := []struct {
		name string
		data []byte
	}{
		{"json", []byte(`{"agent_id":"a","kick":true}`)},
		{"binary with NUL and invalid UTF-8", []byte{0, 1, 2, 0xff, 0xfe, '\n', 0}},
		{"empty", []byte{}},
		{"64 KiB", bytes.Repeat([]byte("0123456789abcdef"), 4096)},
	}
	for _, p := range payloads {
		n, err := b.Publish(ctx, topic, p.data)
		require.NoError(t, err, p.name)
		require.Equal(t, 1, n, p.name)
	}
	// One publisher, one topic: messages arrive in publication order.
	for _, p := range payloads {
		m := receive(t, s)
		require.Equal(t, topic, m.Topic, p.name)
		require.True(t, bytes.Equal(p.data, m.Payload), "%s: got %d bytes, want %d", p.name, len(m.Payload), len(p.data))
	}
}

func testSeveralTopics(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	topics := []string{"alpha", bus.GatewayTopic("gw-2"), bus.TopicScheduler}
	s := subscribe(t, ctx, b, topics...)
	for _, topic := range topics {
		payload := []byte("to " + topic)
		n, err := b.Publish(ctx, topic, payload)
		require.NoError(t, err)
		require.Equal(t, 1, n, topic)
		requireMessage(t, receive(t, s), topic, payload)
	}
	quiet(t, s)
}

func testTopicIsolation(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	sa := subscribe(t, ctx, b, "a")
	sgw := subscribe(t, ctx, b, bus.GatewayTopic("gw-1"))

	// Neighbouring names are other topics: no prefix or pattern matching.
	for _, other := range []string{"b", "ab", "a:", "A", bus.GatewayTopic("gw-10"), bus.GatewayTopic("gw"), "gateway:*", "*", "gateway:gw-?"} {
		n, err := b.Publish(ctx, other, []byte("to "+other))
		require.NoError(t, err)
		require.Equal(t, 0, n, "publishing to %q reached a subscriber", other)
	}
	n, err := b.Publish(ctx, "a", []byte("to a"))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	// The first message a's subscriber sees is its own: nothing leaked before it.
	requireMessage(t, receive(t, sa), "a", []byte("to a"))
	quiet(t, sa)
	quiet(t, sgw)
}

func testCloseSubscription(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	const topic = "closing"
	keep := subscribe(t, ctx, b, topic)
	s, err := b.Subscribe(ctx, topic)
	require.NoError(t, err)

	n, err := b.Publish(ctx, topic, []byte("before"))
	require.NoError(t, err)
	require.Equal(t, 2, n)
	requireMessage(t, receive(t, s), topic, []byte("before"))
	requireMessage(t, receive(t, keep), topic, []byte("before"))

	require.NoError(t, s.Close())
	deadline := time.After(ReceiveTimeout)
	for closed := false; !closed; {
		select {
		case _, ok := <-s.Messages():
			closed = !ok
		case <-deadline:
			t.Fatalf("Messages() not closed within %s of Close", ReceiveTimeout)
		}
	}

	// The closed subscription stops counting (an implementation may take a
	// moment to unsubscribe); the other one still receives every message.
	published := 0
	require.Eventually(t, func() bool {
		n, err := b.Publish(ctx, topic, []byte("after"))
		if err != nil {
			return false
		}
		published++
		return n == 1
	}, ReceiveTimeout, 20*time.Millisecond, "a closed subscription is still counted")
	for range published {
		requireMessage(t, receive(t, keep), topic, []byte("after"))
	}
	quiet(t, keep)
}

func agentID(t *testing.T, name string) string {
	return "agent-" + strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()) + "-" + name
}

func testPresenceSet(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	id := agentID(t, "1")
	e1 := bus.Entry{GatewayID: "gw-1", SessionID: "s-1"}
	e2 := bus.Entry{GatewayID: "gw-2", SessionID: "s-2"}

	steps := []struct {
		set  bus.Entry
		prev *bus.Entry
	}{
		{e1, nil},
		{e2, &e1},
		{e2, &e2}, // the same session again
		{e1, &e2},
	}
	for i, st := range steps {
		prev, err := b.SetPresence(ctx, id, st.set, time.Minute)
		require.NoError(t, err, "step %d", i)
		require.Equal(t, st.prev, prev, "step %d", i)
		got, err := b.LookupPresence(ctx, []string{id})
		require.NoError(t, err)
		require.Equal(t, map[string]bus.Entry{id: st.set}, got, "step %d", i)
	}
}

func testPresenceLookup(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	present := map[string]bus.Entry{}
	for i := range 5 {
		id := agentID(t, fmt.Sprintf("p%d", i))
		e := bus.Entry{GatewayID: fmt.Sprintf("gw-%d", i%2), SessionID: fmt.Sprintf("s-%d", i)}
		_, err := b.SetPresence(ctx, id, e, time.Minute)
		require.NoError(t, err)
		present[id] = e
	}
	absent := []string{agentID(t, "absent-1"), agentID(t, "absent-2")}

	all := make([]string, 0, len(present)+len(absent))
	for id := range present {
		all = append(all, id)
	}
	all = append(all, absent...)

	cases := []struct {
		name string
		ids  []string
		want map[string]bus.Entry
	}{
		{"nil", nil, map[string]bus.Entry{}},
		{"empty", []string{}, map[string]bus.Entry{}},
		{"only absent", absent, map[string]bus.Entry{}},
		{"one present", all[:1], map[string]bus.Entry{all[0]: present[all[0]]}},
		{"mixed", all, present},
		{"duplicates", append([]string{all[0], absent[0]}, all[0]), map[string]bus.Entry{all[0]: present[all[0]]}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.LookupPresence(ctx, tc.ids)
			require.NoError(t, err)
			if len(tc.want) == 0 {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func testPresenceRefresh(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	id := agentID(t, "r")
	mine := bus.Entry{GatewayID: "gw-1", SessionID: "s-1"}
	cases := []struct {
		name string
		id   string
		e    bus.Entry
		want bool
	}{
		{"same session", id, mine, true},
		{"other session same gateway", id, bus.Entry{GatewayID: "gw-1", SessionID: "s-2"}, false},
		{"same session id other gateway", id, bus.Entry{GatewayID: "gw-2", SessionID: "s-1"}, false},
		{"zero entry", id, bus.Entry{}, false},
		{"absent agent", agentID(t, "nobody"), mine, false},
	}
	_, err := b.SetPresence(ctx, id, mine, time.Minute)
	require.NoError(t, err)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := b.RefreshPresence(ctx, tc.id, tc.e, time.Minute)
			require.NoError(t, err)
			require.Equal(t, tc.want, ok)
			got, err := b.LookupPresence(ctx, []string{id})
			require.NoError(t, err)
			require.Equal(t, map[string]bus.Entry{id: mine}, got, "a refresh never changes the entry")
		})
	}
	got, err := b.LookupPresence(ctx, []string{agentID(t, "nobody")})
	require.NoError(t, err)
	require.Empty(t, got, "refreshing an absent agent does not create it")
}

func testPresenceRefreshMany(t *testing.T, b BusPresence) {
	ctx := context.Background()
	mine := bus.Entry{GatewayID: "gw-1", SessionID: "s-1"}
	other := bus.Entry{GatewayID: "gw-2", SessionID: "s-2"}
	_, err := b.SetPresence(ctx, "kept", mine, ShortTTL)
	require.NoError(t, err)
	_, err = b.SetPresence(ctx, "moved", other, time.Minute)
	require.NoError(t, err)
	got, err := b.RefreshPresences(ctx, map[string]bus.Entry{"kept": mine, "moved": mine, "gone": mine}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, map[string]bus.Refresh{"kept": bus.Refreshed, "moved": bus.Replaced, "gone": bus.Missing}, got)
	time.Sleep(2 * ShortTTL)
	present, err := b.LookupPresence(ctx, []string{"kept", "moved", "gone"})
	require.NoError(t, err)
	require.Equal(t, map[string]bus.Entry{"kept": mine, "moved": other}, present, "the refresh extended kept's TTL and left the others alone")
	empty, err := b.RefreshPresences(ctx, nil, time.Minute)
	require.NoError(t, err)
	require.Empty(t, empty)
}

func testPresenceRefreshExtends(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	id := agentID(t, "x")
	e := bus.Entry{GatewayID: "gw-1", SessionID: "s-1"}
	_, err := b.SetPresence(ctx, id, e, ShortTTL)
	require.NoError(t, err)
	ok, err := b.RefreshPresence(ctx, id, e, time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	time.Sleep(3 * ShortTTL)
	got, err := b.LookupPresence(ctx, []string{id})
	require.NoError(t, err)
	require.Equal(t, map[string]bus.Entry{id: e}, got, "the refreshed TTL replaced the short one")

	// A refresh with a short TTL shortens it again.
	ok, err = b.RefreshPresence(ctx, id, e, ShortTTL)
	require.NoError(t, err)
	require.True(t, ok)
	requireExpires(t, b, id)
	ok, err = b.RefreshPresence(ctx, id, e, time.Minute)
	require.NoError(t, err)
	require.False(t, ok, "an expired entry cannot be refreshed")
}

func testPresenceDelete(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	id := agentID(t, "d")
	mine := bus.Entry{GatewayID: "gw-1", SessionID: "s-1"}
	_, err := b.SetPresence(ctx, id, mine, time.Minute)
	require.NoError(t, err)

	steps := []struct {
		name      string
		id        string
		e         bus.Entry
		deleted   bool
		remaining map[string]bus.Entry
	}{
		{"other session", id, bus.Entry{GatewayID: "gw-1", SessionID: "s-old"}, false, map[string]bus.Entry{id: mine}},
		{"other gateway", id, bus.Entry{GatewayID: "gw-2", SessionID: "s-1"}, false, map[string]bus.Entry{id: mine}},
		{"absent agent", agentID(t, "nobody"), mine, false, map[string]bus.Entry{id: mine}},
		{"own session", id, mine, true, map[string]bus.Entry{}},
		{"own session again", id, mine, false, map[string]bus.Entry{}},
	}
	for _, st := range steps {
		ok, err := b.DeletePresence(ctx, st.id, st.e)
		require.NoError(t, err, st.name)
		require.Equal(t, st.deleted, ok, st.name)
		got, err := b.LookupPresence(ctx, []string{id})
		require.NoError(t, err)
		if len(st.remaining) == 0 {
			require.Empty(t, got, st.name)
		} else {
			require.Equal(t, st.remaining, got, st.name)
		}
	}

	// A replaced session's late delete must not remove the newer session.
	newer := bus.Entry{GatewayID: "gw-2", SessionID: "s-2"}
	_, err = b.SetPresence(ctx, id, mine, time.Minute)
	require.NoError(t, err)
	prev, err := b.SetPresence(ctx, id, newer, time.Minute)
	require.NoError(t, err)
	require.Equal(t, &mine, prev)
	ok, err := b.DeletePresence(ctx, id, mine)
	require.NoError(t, err)
	require.False(t, ok)
	got, err := b.LookupPresence(ctx, []string{id})
	require.NoError(t, err)
	require.Equal(t, map[string]bus.Entry{id: newer}, got)
}

func testPresenceTTL(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	short := agentID(t, "short")
	long := agentID(t, "long")
	e := bus.Entry{GatewayID: "gw-1", SessionID: "s-1"}
	_, err := b.SetPresence(ctx, short, e, ShortTTL)
	require.NoError(t, err)
	_, err = b.SetPresence(ctx, long, e, time.Minute)
	require.NoError(t, err)

	got, err := b.LookupPresence(ctx, []string{short, long})
	require.NoError(t, err)
	require.Len(t, got, 2, "both present right after Set")

	requireExpires(t, b, short)
	got, err = b.LookupPresence(ctx, []string{short, long})
	require.NoError(t, err)
	require.Equal(t, map[string]bus.Entry{long: e}, got)

	// After expiry the next Set sees no previous entry.
	prev, err := b.SetPresence(ctx, short, e, time.Minute)
	require.NoError(t, err)
	require.Nil(t, prev)
}

// requireExpires waits until the agent's short-TTL entry is gone.
func requireExpires(t *testing.T, b BusPresence, id string) {
	t.Helper()
	ctx := ctxFor(t)
	require.Eventually(t, func() bool {
		got, err := b.LookupPresence(ctx, []string{id})
		return err == nil && len(got) == 0
	}, ShortTTL+5*time.Second, 25*time.Millisecond, "entry with a %s TTL did not expire", ShortTTL)
}
