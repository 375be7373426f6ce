package agentsdk

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/viworks/backend-agent/pkg/atomicfile"
	"github.com/viworks/backend-agent/pkg/signing"
)

// Files of Config.StateDir.
const (
	stateCredentialFile = "credential"      // the enrolled credential
	stateNoncesFile     = "nonces.json"     // the replay window of accepted COMMANDs
	statePinnedKeyFile  = "signing-key.pub" // the signing key pinned on first use (base64)
)

// nonceRecord is one remembered nonce of the replay window on disk.
type nonceRecord struct {
	Nonce       string    `json:"nonce"`
	ExecutionID string    `json:"execution_id"`
	ExpiresAt   time.Time `json:"expires_at"`
}

type nonceFile struct {
	Nonces []nonceRecord `json:"nonces"` // oldest first
}

// prepareStateDir creates the state directory (mode 0700) or tightens an
// existing one's mode.
func prepareStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the state directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // G302: a directory needs its x bit; 0700 is owner-only
		return fmt.Errorf("restricting the state directory: %w", err)
	}
	return nil
}

// credentialPath is where the enrolled credential is kept ("" nowhere).
func (c Config) credentialPath() string {
	if c.CredentialFile != "" {
		return c.CredentialFile
	}
	if c.StateDir != "" {
		return filepath.Join(c.StateDir, stateCredentialFile)
	}
	return ""
}

// loadCredential reads a kept credential; a missing file is no credential.
func loadCredential(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the credential: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// loadNonces restores the replay window kept in the state directory,
// dropping nonces of COMMANDs that have expired since (they are refused as
// expired anyway).
func (a *Agent) loadNonces() error {
	b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, stateNoncesFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the replay window: %w", err)
	}
	var nf nonceFile
	if err := json.Unmarshal(b, &nf); err != nil {
		return fmt.Errorf("reading the replay window: %w", err)
	}
	now := a.cfg.Clock()
	for _, r := range nf.Nonces {
		if now.After(r.ExpiresAt.Add(a.cfg.MaxClockSkew)) {
			continue
		}
		a.nonces.add(r.Nonce, r.ExecutionID, r.ExpiresAt)
	}
	return nil
}

// saveNonces writes the replay window (a snapshot taken with a.mu held).
func (a *Agent) saveNonces(records []nonceRecord) error {
	b, err := json.Marshal(nonceFile{Nonces: records})
	if err != nil {
		return fmt.Errorf("encoding the replay window: %w", err)
	}
	return atomicfile.Write(filepath.Join(a.cfg.StateDir, stateNoncesFile), b)
}

// loadPinnedKey reads the signing key pinned on first use by an earlier
// process; nil when there is none.
func loadPinnedKey(dir string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(filepath.Join(dir, statePinnedKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the pinned signing key: %w", err)
	}
	pub, err := signing.DecodePublicKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("reading the pinned signing key %s: %w", filepath.Join(dir, statePinnedKeyFile), err)
	}
	return pub, nil
}

// savePinnedKey keeps the key pinned on first use for later processes.
func savePinnedKey(dir string, pub ed25519.PublicKey) error {
	return atomicfile.Write(filepath.Join(dir, statePinnedKeyFile), []byte(signing.EncodePublicKey(pub)+"\n"))
}
