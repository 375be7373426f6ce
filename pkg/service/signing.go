package service

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/signing"
)

// LoadSigner loads the command signing key (BACKEND_PRIVATE_KEY_PATH, PKCS#8
// PEM) and the previous key of a rotation, if configured. Without a key file,
// dev mode gets an ephemeral key with a loud warning; anything else fails.
func LoadSigner(cfg config.Config, log logrus.FieldLogger) (*signing.Signer, error) {
	path := cfg.Security.BackendPrivateKeyPath
	priv, err := signing.LoadPrivateKey(path)
	switch {
	case err == nil:
	case cfg.Server.DevMode && errors.Is(err, fs.ErrNotExist):
		if _, priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("generating an ephemeral signing key: %w", err)
		}
		log.WithField("path", path).Warn("DEV MODE: no command signing key file; signing with an EPHEMERAL key that dies with this process. Agents that pinned another key will refuse these commands. Never run production like this.")
	default:
		return nil, fmt.Errorf("command signing key (security.backend_private_key_path, BACKEND_PRIVATE_KEY_PATH): %w", err)
	}
	var extra []ed25519.PublicKey
	if p := cfg.Security.PreviousSigningKeyPath; p != "" {
		pub, err := signing.LoadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("previous signing key (security.previous_signing_key_path, BACKEND_PREVIOUS_KEY_PATH): %w", err)
		}
		extra = append(extra, pub)
	}
	return signing.NewSigner(priv, extra...)
}
