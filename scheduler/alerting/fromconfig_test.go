package alerting_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/scheduler/alerting"
)

func TestConfigFromMapsTheSharedConfiguration(t *testing.T) {
	for _, store := range []bool{false, true} {
		cfg := config.Default()
		cfg.Alerts.WebhookStoreResponseBody = store
		require.Equal(t, store, alerting.ConfigFrom(cfg).StoreResponseBody)
	}
}
