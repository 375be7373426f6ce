package agentspec_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/agentspec"
)

func TestCheckID(t *testing.T) {
	for _, tc := range []struct {
		id, reason string
	}{
		{"web-01.prod:a_b", ""},
		{strings.Repeat("a", agentspec.MaxIDLen), ""},
		{"", "is required"},
		{strings.Repeat("a", agentspec.MaxIDLen+1), "is longer than 128 bytes"},
		{"../../etc", "may contain only A-Z a-z 0-9 . _ : -"},
		{"a\u202eb", "may contain only A-Z a-z 0-9 . _ : -"},
		{"..", "must not be only dots"},
	} {
		err := agentspec.CheckID("agent_id", tc.id)
		if tc.reason == "" {
			require.NoError(t, err, tc.id)
			continue
		}
		require.Equal(t, &agentspec.Error{Field: "agent_id", Reason: tc.reason}, err, tc.id)
	}
}

func TestAttributeLimits(t *testing.T) {
	long := strings.Repeat("x", agentspec.MaxShortFieldLen+1)
	require.NoError(t, agentspec.CheckShort("site", strings.Repeat("x", agentspec.MaxShortFieldLen)))
	require.EqualError(t, agentspec.CheckShort("site", long), "site: longer than 256 bytes")

	require.NoError(t, agentspec.CheckCapabilities("caps", []string{"echo", "sleep"}))
	require.EqualError(t, agentspec.CheckCapabilities("caps", []string{""}), "caps: entries must be 1..256 bytes")
	require.EqualError(t, agentspec.CheckCapabilities("caps", make([]string, agentspec.MaxCapabilities+1)), "caps: more than 128 entries")

	require.NoError(t, agentspec.CheckLabels("labels", map[string]string{"role": "db", "empty": ""}))
	require.EqualError(t, agentspec.CheckLabels("labels", map[string]string{"": "v"}), "labels: keys must be 1..256 bytes, values at most 256")
	require.EqualError(t, agentspec.CheckLabels("labels", map[string]string{"k": long}), "labels: keys must be 1..256 bytes, values at most 256")
	many := map[string]string{}
	for i := range agentspec.MaxLabels + 1 {
		many[strings.Repeat("k", i+1)] = ""
	}
	require.EqualError(t, agentspec.CheckLabels("labels", many), "labels: more than 64 entries")
}
