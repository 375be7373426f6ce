package alerting

import "github.com/viworks/backend-agent/pkg/config"

// ConfigFrom is the alerter's Config from the shared configuration, without
// the dependencies the scheduler wires (targets, events).
func ConfigFrom(cfg config.Config) Config {
	return Config{StoreResponseBody: cfg.Alerts.WebhookStoreResponseBody}
}
