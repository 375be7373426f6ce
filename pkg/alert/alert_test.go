package alert_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/alert"
	"github.com/viworks/backend-agent/pkg/store"
)

// The API and webhooks show an alert as one document: firing until it has
// resolved_at, details {} when there are none, fired_at in UTC.
func TestNewDoc(t *testing.T) {
	fired := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	resolved := fired.Add(time.Minute)
	cases := []struct {
		name  string
		alert store.Alert
		want  string
	}{
		{"firing", store.Alert{ID: "a1", RuleID: "r1", RuleName: "off", Kind: store.AlertAgentOffline, Subject: "agent-1", FiredAt: fired},
			`{"id":"a1","rule_id":"r1","rule_name":"off","kind":"agent_offline","subject":"agent-1","state":"firing","details":{},"fired_at":"2026-01-02T02:04:05Z","resolved_at":null}`},
		{"resolved", store.Alert{ID: "a2", RuleID: "r1", RuleName: "off", Kind: store.AlertCommandFailureRate, Subject: store.SubjectGlobal,
			Details: store.JSON(`{"rate":0.5}`), FiredAt: fired, ResolvedAt: &resolved},
			`{"id":"a2","rule_id":"r1","rule_name":"off","kind":"command_failure_rate","subject":"global","state":"resolved","details":{"rate":0.5},"fired_at":"2026-01-02T02:04:05Z","resolved_at":"2026-01-02T03:05:05+01:00"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(alert.NewDoc(tc.alert))
			require.NoError(t, err)
			require.JSONEq(t, tc.want, string(b))
		})
	}
}
