package bus_test

import (
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
)

// A malformed message on any topic is an error for its receiver, never a panic.
func TestDecodeRefusesMalformed(t *testing.T) {
	cases := []struct {
		name    string
		payload string
		decode  func([]byte) error
	}{
		{"wake not json", `{"reason":`, func(p []byte) error { _, err := bus.DecodeWake(p); return err }},
		{"wake wrong type", `{"reason":7}`, func(p []byte) error { _, err := bus.DecodeWake(p); return err }},
		{"agent ended not json", `[]`, func(p []byte) error { _, err := bus.DecodeAgentEnded(p); return err }},
		{"agent ended without agent", `{"reason":"revoked"}`, func(p []byte) error { _, err := bus.DecodeAgentEnded(p); return err }},
		{"deliveries not json", `nul`, func(p []byte) error { _, err := bus.DecodeDeliveries(p); return err }},
		{"deliveries items not a list", `{"items":{}}`, func(p []byte) error { _, err := bus.DecodeDeliveries(p); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.decode([]byte(tc.payload)))
		})
	}
}

// The best-effort messages log their failure once, in the sender, with the
// fields that name what was lost.
func TestSenderLogsFailures(t *testing.T) {
	cases := []struct {
		name  string
		send  func(s *bus.Sender)
		msg   string
		level logrus.Level
		field string
	}{
		{"wake", func(s *bus.Sender) { s.Wake(t.Context(), bus.Wake{Reason: bus.WakeCommand, CommandID: "c1"}) }, "waking schedulers failed", logrus.WarnLevel, "command_id"},
		{"agent ended", func(s *bus.Sender) { s.AgentEnded(t.Context(), "a1", "revoked") }, "telling gateways to close the agent's session failed", logrus.ErrorLevel, "agent_id"},
		{"cancel", func(s *bus.Sender) { s.Cancel(t.Context(), "gw", "a1", "e1", "timed out") }, "sending cancel failed", logrus.WarnLevel, "execution_id"},
		{"kick", func(s *bus.Sender) { s.Kick(t.Context(), "gw", "a1", "s1") }, "telling the previous gateway to drop the old session failed", logrus.WarnLevel, "agent_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log, hook := test.NewNullLogger()
			tc.send(bus.NewSender(closedBus(t), log))
			require.Len(t, hook.AllEntries(), 1)
			e := hook.LastEntry()
			require.Equal(t, tc.msg, e.Message)
			require.Equal(t, tc.level, e.Level)
			require.Contains(t, e.Data, tc.field)
			require.ErrorIs(t, e.Data[logrus.ErrorKey].(error), bus.ErrClosed)
		})
	}
	_, err := bus.NewSender(closedBus(t), logrus.New()).Deliver(t.Context(), "gw", bus.Delivery{AgentID: "a1"})
	require.ErrorIs(t, err, bus.ErrClosed, "Deliver leaves the failure to its caller")
}

func closedBus(t *testing.T) *bus.Memory {
	b := bus.NewMemory()
	require.NoError(t, b.Close())
	return b
}
