package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	require.Zero(t, store.Percentile(nil, 0.5))
	require.Equal(t, 7.0, store.Percentile([]float64{7}, 0.99))
	require.Equal(t, 2.5, store.Percentile([]float64{1, 2, 3, 4}, 0.5))
	require.InDelta(t, 99.01, store.Percentile(seq(100), 0.99), 1e-9) // percentile_cont(0.99) over 1..100
	require.Equal(t, 1.0, store.Percentile(seq(100), 0))
	require.Equal(t, 100.0, store.Percentile(seq(100), 1))
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}
