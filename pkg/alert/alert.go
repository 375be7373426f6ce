// Package alert is the alerting domain the API and the scheduler share: what
// a valid rule is (its name and the params of each kind) and the one document
// an alert is shown as, in the API's answers and in webhook events. The store
// keeps rules and alerts; the scheduler's alerting package evaluates and
// delivers them.
package alert

import (
	"encoding/json"
	"time"

	"github.com/viworks/backend-agent/pkg/store"
)

// Doc is an alert as the API lists it and webhooks receive it.
type Doc struct {
	ID         string          `json:"id"`
	RuleID     string          `json:"rule_id"`
	RuleName   string          `json:"rule_name"`
	Kind       string          `json:"kind"`
	Subject    string          `json:"subject"`
	State      string          `json:"state"` // firing or resolved
	Details    json.RawMessage `json:"details"`
	FiredAt    time.Time       `json:"fired_at"`
	ResolvedAt *time.Time      `json:"resolved_at"`
}

// NewDoc is the document of a stored alert: firing while it has no
// resolved_at, details {} when it has none.
func NewDoc(a store.Alert) Doc {
	state := store.AlertStateFiring
	if a.ResolvedAt != nil {
		state = store.AlertStateResolved
	}
	return Doc{ID: a.ID, RuleID: a.RuleID, RuleName: a.RuleName, Kind: a.Kind, Subject: a.Subject, State: state,
		Details: object(a.Details), FiredAt: a.FiredAt.UTC(), ResolvedAt: a.ResolvedAt}
}

// object is raw, or {} when raw is empty.
func object(raw store.JSON) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage(`{}`)
	}
	return json.RawMessage(raw)
}
