package service

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/atomicfile"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/signing"
)

// LoadSigner loads the command signing key (BACKEND_PRIVATE_KEY_PATH, PKCS#8
// PEM) and the previous key of a rotation, if configured, and publishes its
// public half (PublishPublicKey). Without a key file, dev mode gets an
// ephemeral key with a loud warning (not published); anything else fails.
func LoadSigner(cfg config.Config, log logrus.FieldLogger) (*signing.Signer, error) {
	path := cfg.Security.BackendPrivateKeyPath
	priv, err := signing.LoadPrivateKey(path)
	switch {
	case err == nil:
		if err := PublishPublicKey(cfg.Security.BackendCertificatePath, priv.Public().(ed25519.PublicKey), log); err != nil {
			return nil, err
		}
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

// PublishPublicKey keeps the file at path (security.backend_certificate_path,
// BACKEND_CERTIFICATE_PATH) holding pub, the public half of the signing key,
// for agents to pin: one line, the base64 of the 32 raw key bytes (the
// encoding of WELCOME's signing_public_key). An absent file is written (mode
// 0644, atomically); a file that cannot be written (a read-only directory) is
// a warning. A file present with another key, or one that is not a public key
// (signing.LoadPublicKey's formats), is an error: the process must not sign
// with a key its agents were not given. path "" does nothing.
func PublishPublicKey(path string, pub ed25519.PublicKey, log logrus.FieldLogger) error {
	if path == "" {
		return nil
	}
	have, err := signing.LoadPublicKey(path)
	switch {
	case err == nil:
		if !have.Equal(pub) {
			return fmt.Errorf("the signing public key file (security.backend_certificate_path, BACKEND_CERTIFICATE_PATH) %s holds key %s, but the private key (security.backend_private_key_path) is key %s; configure the matching private key, or delete the file to have it rewritten",
				path, signing.KeyID(have), signing.KeyID(pub))
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
	default:
		return fmt.Errorf("the signing public key file (security.backend_certificate_path, BACKEND_CERTIFICATE_PATH): %w", err)
	}
	if err := atomicfile.WriteMode(path, []byte(signing.EncodePublicKey(pub)+"\n"), publicKeyMode); err != nil {
		log.WithError(err).WithField("path", path).Warn("could not write the signing public key file (security.backend_certificate_path); agents must be given the key another way")
		return nil
	}
	log.WithFields(logrus.Fields{"path": path, "key_id": signing.KeyID(pub)}).Info("wrote the signing public key file")
	return nil
}

// publicKeyMode is the mode of the signing public key file: anyone may read it.
const publicKeyMode os.FileMode = 0o644
