package bustest

import (
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// testSender checks that every message of bus.Sender arrives on its topic and
// decodes, with the receivers' decoders, to what was sent.
func testSender(t *testing.T, b BusPresence) {
	ctx := ctxFor(t)
	s := bus.NewSender(b, logrus.New())
	const gw = "gw-1"
	sched := subscribe(t, ctx, b, bus.TopicScheduler)
	agents := subscribe(t, ctx, b, bus.TopicAgents)
	gateway := subscribe(t, ctx, b, bus.GatewayTopic(gw))

	wake := bus.Wake{Reason: bus.WakeResult, CommandIDs: []string{"c1", "c2"}}
	s.Wake(ctx, wake)
	m := receive(t, sched)
	require.Equal(t, bus.TopicScheduler, m.Topic)
	got, err := bus.DecodeWake(m.Payload)
	require.NoError(t, err)
	require.Equal(t, wake, got)

	s.AgentEnded(ctx, "agent-1", "revoked by alice")
	m = receive(t, agents)
	require.Equal(t, bus.TopicAgents, m.Topic)
	ended, err := bus.DecodeAgentEnded(m.Payload)
	require.NoError(t, err)
	require.Equal(t, bus.AgentEnded{AgentID: "agent-1", Reason: "revoked by alice"}, ended)

	s.Cancel(ctx, gw, "agent-1", "exec-1", "timed out")
	m = receive(t, gateway)
	require.Equal(t, bus.GatewayTopic(gw), m.Topic)
	items, err := bus.DecodeDeliveries(m.Payload)
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.Equal(t, "agent-1", items[0].AgentID)
	require.Empty(t, items[0].ExecutionID, "a CANCEL that is not delivered is not re-routed")
	f, err := protocol.DecodeServerFrame(items[0].Frame)
	require.NoError(t, err, "the gateway forwards the frame to the agent as it is")
	require.Equal(t, protocol.TypeCancel, f.Type)
	require.Equal(t, &protocol.Cancel{ExecutionID: "exec-1", Reason: "timed out"}, f.Payload)

	s.Kick(ctx, gw, "agent-1", "session-1")
	items, err = bus.DecodeDeliveries(receive(t, gateway).Payload)
	require.NoError(t, err)
	require.Equal(t, []bus.Delivery{{AgentID: "agent-1", SessionID: "session-1", Kick: true}}, items)

	n, err := s.Deliver(ctx, gw, bus.Delivery{AgentID: "a", ExecutionID: "e1", Frame: []byte(`{"type":"COMMAND"}`)}, bus.Delivery{AgentID: "b", ExecutionID: "e2", Frame: []byte(`{}`)})
	require.NoError(t, err)
	require.Equal(t, 1, n, "one gateway listens")
	items, err = bus.DecodeDeliveries(receive(t, gateway).Payload)
	require.NoError(t, err)
	require.Len(t, items, 2, "one message carries the whole batch")
	require.Equal(t, "e2", items[1].ExecutionID)

	n, err = s.Deliver(ctx, "gw-gone", bus.Delivery{AgentID: "a"})
	require.NoError(t, err)
	require.Zero(t, n, "nobody holds a departed gateway's topic")
}
