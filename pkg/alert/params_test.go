package alert_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/alert"
	"github.com/viworks/backend-agent/pkg/store"
)

func verrFields(t *testing.T, err error) []string {
	t.Helper()
	var v store.ValidationErrors
	require.ErrorAs(t, err, &v)
	out := make([]string, len(v))
	for i, e := range v {
		out[i] = e.Field
	}
	return out
}

func TestParseParams(t *testing.T) {
	valid := []struct {
		kind, params, want string
	}{
		{store.AlertAgentOffline, `{"seconds":300}`, `{"seconds":300}`},
		{store.AlertAgentOffline, `{"seconds":0,"selector":{"site":"prod","labels":{"role":"web"}}}`, `{"seconds":0,"selector":{"site":"prod","labels":{"role":"web"}}}`},
		{store.AlertAgentOffline, `{"seconds":5,"selector":{}}`, `{"seconds":5}`},
		{store.AlertAgentUnhealthy, ``, `{"seconds":0}`},
		{store.AlertAgentUnhealthy, `{"seconds":60}`, `{"seconds":60}`},
		{store.AlertMetricThreshold, `{"metric":"cpu_percent","threshold":90,"for_seconds":300}`, `{"metric":"cpu_percent","threshold":90,"for_seconds":300}`},
		{store.AlertMetricThreshold, `{"metric":"disk.root:pct","threshold":-1.5,"for_seconds":1,"selector":{"capability":"x"}}`, `{"metric":"disk.root:pct","threshold":-1.5,"for_seconds":1,"selector":{"capability":"x"}}`},
		{store.AlertCommandFailureRate, `{"window_seconds":600,"rate":0.25}`, `{"window_seconds":600,"rate":0.25,"min_executions":1}`},
		{store.AlertCommandFailureRate, `{"window_seconds":600,"rate":0,"min_executions":20}`, `{"window_seconds":600,"rate":0,"min_executions":20}`},
	}
	for _, tc := range valid {
		typed, norm, err := alert.ParseParams(tc.kind, []byte(tc.params))
		require.NoError(t, err, "%s %s", tc.kind, tc.params)
		require.NotNil(t, typed)
		require.JSONEq(t, tc.want, string(norm), "%s %s", tc.kind, tc.params)
	}
	typed, _, err := alert.ParseParams(store.AlertMetricThreshold, []byte(`{"metric":"load1","threshold":2,"for_seconds":60}`))
	require.NoError(t, err)
	require.Equal(t, alert.MetricThresholdParams{Metric: "load1", Threshold: 2, ForSeconds: 60}, typed)

	invalid := []struct {
		kind, params string
		fields       []string
	}{
		{"cpu", `{}`, []string{"kind"}},
		{"", `{}`, []string{"kind"}},
		{store.AlertAgentOffline, `{}`, []string{"params.seconds"}},
		{store.AlertAgentOffline, `{"seconds":-1}`, []string{"params.seconds"}},
		{store.AlertAgentOffline, `{"seconds":99999999}`, []string{"params.seconds"}},
		{store.AlertAgentOffline, `{"seconds":"5"}`, []string{"params"}},
		{store.AlertAgentOffline, `{"seconds":5,"extra":1}`, []string{"params"}},
		{store.AlertAgentOffline, `[1]`, []string{"params"}},
		{store.AlertAgentOffline, `{"seconds":5} {}`, []string{"params"}},
		{store.AlertAgentOffline, `{"seconds":5,"selector":{"site":"` + strings.Repeat("s", 257) + `"}}`, []string{"params.selector.site"}},
		{store.AlertAgentOffline, `{"seconds":5,"selector":{"labels":{"":"x"}}}`, []string{"params.selector.labels"}},
		{store.AlertMetricThreshold, `{}`, []string{"params.metric", "params.threshold", "params.for_seconds"}},
		{store.AlertMetricThreshold, `{"metric":"cpu\"x","threshold":1,"for_seconds":1}`, []string{"params.metric"}},
		{store.AlertMetricThreshold, `{"metric":"cpu","threshold":1,"for_seconds":0}`, []string{"params.for_seconds"}},
		{store.AlertMetricThreshold, `{"metric":"cpu","threshold":1,"for_seconds":86401}`, []string{"params.for_seconds"}},
		{store.AlertCommandFailureRate, `{"window_seconds":60}`, []string{"params.rate"}},
		{store.AlertCommandFailureRate, `{"window_seconds":60,"rate":1}`, []string{"params.rate"}},
		{store.AlertCommandFailureRate, `{"window_seconds":0,"rate":-0.1,"min_executions":0}`, []string{"params.window_seconds", "params.rate", "params.min_executions"}},
	}
	for _, tc := range invalid {
		_, _, err := alert.ParseParams(tc.kind, []byte(tc.params))
		require.Equal(t, tc.fields, verrFields(t, err), "%s %s", tc.kind, tc.params)
	}
}

// A rule's name and params are checked together, the name's problems first.
func TestCheckRule(t *testing.T) {
	cases := []struct {
		name, kind, params string
		fields             []string
	}{
		{"", store.AlertAgentOffline, `{}`, []string{"name", "params.seconds"}},
		{"bad\nname", store.AlertAgentOffline, `{"seconds":1}`, []string{"name"}},
		{strings.Repeat("n", store.MaxRuleNameLen+1), store.AlertAgentOffline, `{"seconds":1}`, []string{"name"}},
		{"bad\xffutf8", store.AlertAgentOffline, `{"seconds":1}`, []string{"name"}},
		{"cpu", "cpu", `{}`, []string{"kind"}},
	}
	for _, tc := range cases {
		_, err := alert.CheckRule(tc.name, tc.kind, []byte(tc.params))
		require.Equal(t, tc.fields, verrFields(t, err), "%q %s %s", tc.name, tc.kind, tc.params)
	}
	norm, err := alert.CheckRule("offline", store.AlertAgentOffline, []byte(`{"seconds":60,"selector":{}}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"seconds":60}`, string(norm))
}

// FuzzParseParams: rule params come from API bodies. Parsing never
// panics, and what it accepts is normalized to a fixed point.
func FuzzParseParams(f *testing.F) {
	for _, seed := range []string{`{"seconds":60}`, `{"seconds":1,"selector":{"site":"s","labels":{"a":"b"}}}`,
		`{"metric":"cpu_percent","threshold":1e308,"for_seconds":60}`, `{"window_seconds":60,"rate":0.5,"min_executions":3}`,
		`null`, `[]`, `{"seconds":1e400}`, `{"metric":"\u0000"}`} {
		for i := range store.AlertKinds {
			f.Add(i, []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, kind int, raw []byte) {
		k := "unknown"
		if kind >= 0 && kind < len(store.AlertKinds) {
			k = store.AlertKinds[kind]
		}
		typed, norm, err := alert.ParseParams(k, raw)
		if err != nil {
			var v store.ValidationErrors
			if !errors.As(err, &v) || len(v) == 0 {
				t.Fatalf("error is not a ValidationErrors: %v", err)
			}
			return
		}
		typed2, norm2, err := alert.ParseParams(k, norm)
		if err != nil {
			t.Fatalf("normalized params %s rejected: %v", norm, err)
		}
		if string(norm) != string(norm2) || !reflect.DeepEqual(typed, typed2) {
			t.Fatalf("normalization is not a fixed point: %s vs %s", norm, norm2)
		}
	})
}
