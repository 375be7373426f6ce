package protocol

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// AppendMetricsJSON writes the bytes json.Marshal writes for the same map.
func TestAppendMetricsJSON(t *testing.T) {
	for _, m := range []map[string]float64{
		{"a": 1},
		{"cpu_percent": 12.5, "mem_used_bytes": 1048576, "load1": 0.25, "custom": -1, "zero": 0, "neg_zero": math.Copysign(0, -1)},
		{"tiny": 1e-7, "small": 0.000001, "big": 1e21, "below_big": 999999999999999999999, "max": math.MaxFloat64, "min": math.SmallestNonzeroFloat64, "third": 1.0 / 3},
		{"quote\"back\\slash": 1, "ctl\x00\x01\x1f\b\f\n\r\t": 2, "uni é ✓ 😀": 3, "sep\u2028\u2029": 4, "\ufffd": 5, "del\x7f": 6},
	} {
		want, err := json.Marshal(m)
		require.NoError(t, err)
		tel := &Telemetry{Metrics: m}
		require.Equal(t, string(want), string(tel.AppendMetricsJSON(nil)))
	}
}
