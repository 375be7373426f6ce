package allinone

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/viworks/backend-agent/pkg/signing"
)

// Files the all-in-one keeps in its data directory (each 0600).
const (
	JWTSecretFile        = "jwt.secret"
	AuditKeyFile         = "audit.key"       // HMAC key of the audit chain
	AuditHeadFile        = "audit-head.json" // the audit chain's head, kept outside the database
	EnrollmentSecretFile = "enrollment.secret"
	SigningKeyFile       = "signing.key" // Ed25519, PKCS#8 PEM: the command signing key
	SigningPublicKeyFile = "signing.pub" // its public half, base64: what agents pin (written at start)
	ArgsKeyFile          = "args.key"    // 32 bytes, base64: encrypts secret command args at rest
	DatabaseFile         = "viworks.db"
)

// Secrets are the data directory's generated credentials.
type Secrets struct {
	JWTSecret        string
	AuditKey         string
	EnrollmentSecret string
	SigningKeyPath   string
	ArgsKey          string
	Created          bool // at least one was generated on this start
}

// PrepareDataDir creates dir if needed and checks that it is writable.
func PrepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory %s cannot be created: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data directory %s is not writable: %w", dir, err)
	}
	name := probe.Name()
	_ = probe.Close()
	_ = os.Remove(name)
	return nil
}

// LoadSecrets reads the data directory's secrets, generating the missing ones
// when create is set.
func LoadSecrets(dir string, create bool) (Secrets, error) {
	var s Secrets
	var err error
	if s.JWTSecret, err = secretFile(filepath.Join(dir, JWTSecretFile), create, &s.Created); err != nil {
		return s, err
	}
	if s.AuditKey, err = secretFile(filepath.Join(dir, AuditKeyFile), create, &s.Created); err != nil {
		return s, err
	}
	if s.EnrollmentSecret, err = secretFile(filepath.Join(dir, EnrollmentSecretFile), create, &s.Created); err != nil {
		return s, err
	}
	if s.ArgsKey, err = secretFile(filepath.Join(dir, ArgsKeyFile), create, &s.Created); err != nil {
		return s, err
	}
	s.SigningKeyPath = filepath.Join(dir, SigningKeyFile)
	if _, err := os.Stat(s.SigningKeyPath); errors.Is(err, fs.ErrNotExist) && create {
		if _, err := signing.GenerateKeyFile(s.SigningKeyPath); err != nil {
			return s, err
		}
		s.Created = true
	}
	return s, nil
}

func secretFile(path string, create bool, created *bool) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		v := strings.TrimSpace(string(b))
		if len(v) < 32 {
			return "", fmt.Errorf("%s holds fewer than 32 characters; delete it to have a new secret generated", path)
		}
		return v, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if !create {
		return "", fmt.Errorf("%s does not exist; start `viworks` once with this --data-dir first", path)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generating a secret: %w", err)
	}
	v := base64.RawURLEncoding.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	*created = true
	return v, nil
}
