package service

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/signing"
)

func newKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return pub
}

func TestPublishPublicKey(t *testing.T) {
	pub, other := newKey(t), newKey(t)
	pemOf := func(k ed25519.PublicKey) string {
		b, err := signing.EncodePublicKeyPEM(k)
		require.NoError(t, err)
		return string(b)
	}
	for _, tc := range []struct {
		name    string
		present *string // the file's content before; nil: absent
		path    func(dir string) string
		wantErr []string // substrings of the error; nil: no error
		written bool     // the file holds pub afterwards, mode 0644
	}{
		{name: "absent: written", written: true},
		{name: "present, same key (base64)", present: new(signing.EncodePublicKey(pub) + "\n"), written: true},
		{name: "present, same key (PEM)", present: new(pemOf(pub))},
		{name: "present, another key: refused", present: new(signing.EncodePublicKey(other) + "\n"),
			wantErr: []string{"security.backend_certificate_path", signing.KeyID(other), signing.KeyID(pub)}},
		{name: "present, another key (PEM): refused", present: new(pemOf(other)),
			wantErr: []string{"BACKEND_CERTIFICATE_PATH", signing.KeyID(other)}},
		{name: "present, not a key: refused", present: new("hello\n"),
			wantErr: []string{"backend_certificate_path", "neither PEM"}},
		{name: "directory missing: a warning", path: func(dir string) string { return filepath.Join(dir, "missing", "backend.crt") }},
		{name: "no path: nothing", path: func(string) string { return "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "backend.crt")
			if tc.path != nil {
				path = tc.path(dir)
			}
			if tc.present != nil {
				require.NoError(t, os.WriteFile(path, []byte(*tc.present), 0o644))
			}
			log, hook := logtest.NewNullLogger()
			err := PublishPublicKey(path, pub, log)
			if tc.wantErr != nil {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					require.Contains(t, err.Error(), s)
				}
				got, rerr := os.ReadFile(path)
				require.NoError(t, rerr)
				require.Equal(t, *tc.present, string(got), "a refused file is left alone")
				return
			}
			require.NoError(t, err)
			if tc.path != nil {
				if path != "" {
					require.NoFileExists(t, path)
					require.NotEmpty(t, hook.AllEntries(), "the failed write is logged")
				}
				return
			}
			if tc.written {
				st, err := os.Stat(path)
				require.NoError(t, err)
				require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
				raw, err := os.ReadFile(path)
				require.NoError(t, err)
				// What an agent does with it: the file, or its content as the
				// base64 value of signing_public_key.
				fromValue, err := signing.DecodePublicKey(strings.TrimSpace(string(raw)))
				require.NoError(t, err)
				require.True(t, pub.Equal(fromValue))
			}
			fromFile, err := signing.LoadPublicKey(path)
			require.NoError(t, err)
			require.True(t, pub.Equal(fromFile))
		})
	}
}

// The scheduler refuses to start when the public key file names another key
// than its private key; with the file absent it writes it.
func TestLoadSignerChecksThePublicKeyFile(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "backend.key")
	priv, err := signing.GenerateKeyFile(keyPath)
	require.NoError(t, err)
	cfg := config.Default()
	cfg.Security.BackendPrivateKeyPath = keyPath
	cfg.Security.BackendCertificatePath = filepath.Join(dir, "backend.crt")
	log, _ := logtest.NewNullLogger()

	s, err := LoadSigner(cfg, log)
	require.NoError(t, err)
	require.True(t, s.PublicKey().Equal(priv.Public()))
	pub, err := signing.LoadPublicKey(cfg.Security.BackendCertificatePath)
	require.NoError(t, err)
	require.True(t, pub.Equal(priv.Public()))

	require.NoError(t, os.WriteFile(cfg.Security.BackendCertificatePath, []byte(signing.EncodePublicKey(newKey(t))+"\n"), 0o644))
	_, err = LoadSigner(cfg, log)
	require.ErrorContains(t, err, "security.backend_certificate_path")
}
