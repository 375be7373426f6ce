package alerting

import (
	"encoding/json"
	"time"

	"github.com/viworks/backend-agent/pkg/alert"
	"github.com/viworks/backend-agent/pkg/store"
)

// RuleDoc is the rule of an alert in an event.
type RuleDoc struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Kind   string          `json:"kind"`
	Params json.RawMessage `json:"params"`
}

// Event is the JSON body POSTed to webhooks.
type Event struct {
	Event  string     `json:"event"` // alert.fired or alert.resolved
	Alert  alert.Doc  `json:"alert"`
	Rule   RuleDoc    `json:"rule"`
	SentAt *time.Time `json:"sent_at,omitempty"` // set when sent
}

// render builds the stored document of an event (sent_at is added when sent).
func render(event string, rule store.AlertRule, a store.Alert) (store.JSON, error) {
	params := json.RawMessage(rule.Params)
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	return json.Marshal(Event{
		Event: event,
		Alert: alert.NewDoc(a),
		Rule:  RuleDoc{ID: rule.ID, Name: rule.Name, Kind: rule.Kind, Params: params},
	})
}
