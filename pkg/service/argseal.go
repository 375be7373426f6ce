package service

import (
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/egress"
)

// ArgsKeyring loads the key that encrypts the secret values of command args
// (security.args_encryption_key, ARGS_ENCRYPTION_KEY) and the previous keys
// of a rotation. The API server seals with it and the scheduler opens with
// it; the gateway never needs it. Without a key, dev mode stores secret args
// as given with a loud warning (nil keyring); anything else fails.
func ArgsKeyring(cfg config.Config, log logrus.FieldLogger) (*argseal.Keyring, error) {
	sec := cfg.Security
	if sec.ArgsEncryptionKey == "" {
		if !cfg.Server.DevMode {
			return nil, errors.New("security.args_encryption_key (ARGS_ENCRYPTION_KEY) is required: 32 random bytes as hex or base64 (openssl rand -base64 32)")
		}
		log.Warn("DEV MODE: no args encryption key; secret command args are stored in PLAINTEXT. Never run production like this.")
		return nil, nil
	}
	k, err := argseal.NewKeyring(sec.ArgsEncryptionKey, sec.ArgsPreviousKeys...)
	if err != nil {
		return nil, fmt.Errorf("security.args_encryption_key (ARGS_ENCRYPTION_KEY): %w", err)
	}
	return k, nil
}

// WebhookTargets is the policy of the addresses webhooks may reach: public
// unicast addresses and alerts.webhook_allowed_cidrs.
func WebhookTargets(cfg config.Config) (*egress.Policy, error) {
	p, err := egress.NewPolicy(cfg.Alerts.WebhookAllowedCIDRs)
	if err != nil {
		return nil, fmt.Errorf("alerts.webhook_allowed_cidrs: %w", err)
	}
	return p, nil
}
