package bus_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/bus/bustest"
)

func TestMemoryConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T) interface {
		bus.Bus
		bus.Presence
	} {
		b := bus.NewMemory()
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

func TestMemoryClosed(t *testing.T) {
	b := bus.NewMemory()
	sub, err := b.Subscribe(t.Context(), "t")
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	_, open := <-sub.Messages()
	require.False(t, open, "subscriptions end when the bus closes")
	_, err = b.Publish(t.Context(), "t", []byte("x"))
	require.ErrorIs(t, err, bus.ErrClosed)
	_, err = b.Subscribe(t.Context(), "t")
	require.ErrorIs(t, err, bus.ErrClosed)
	require.ErrorIs(t, b.Ping(t.Context()), bus.ErrClosed)
}
