package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/viworks-agent/config"
)

func TestTrustedKeys(t *testing.T) {
	dir := t.TempDir()
	priv, err := signing.GenerateKeyFile(filepath.Join(dir, "signing.key"))
	require.NoError(t, err)
	s, err := signing.NewSigner(priv)
	require.NoError(t, err)
	b64 := signing.EncodePublicKey(s.PublicKey())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "signing.pub"), []byte(b64+"\n"), 0o600))
	pemPub, err := signing.EncodePublicKeyPEM(s.PublicKey())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "signing.pem"), pemPub, 0o600))

	for _, v := range []string{b64, " " + b64 + "\n", filepath.Join(dir, "signing.pub"), filepath.Join(dir, "signing.pem"), filepath.Join(dir, "signing.key")} {
		keys, err := trustedKeys(v)
		require.NoError(t, err, v)
		require.Len(t, keys, 1)
		require.Equal(t, s.PublicKey(), keys[s.KeyID()], v)
	}
	keys, err := trustedKeys("")
	require.NoError(t, err)
	require.Nil(t, keys, "empty: trust on first use")
	_, err = trustedKeys("not-a-key")
	require.ErrorContains(t, err, "neither a base64 Ed25519 public key nor a readable file")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "junk"), []byte("junk"), 0o600))
	_, err = trustedKeys(filepath.Join(dir, "junk"))
	require.ErrorContains(t, err, "signing_public_key")
}

// Without a pinned key the agent says loudly that it trusts on first use.
func TestNewWarnsAboutTrustOnFirstUse(t *testing.T) {
	log, hook := test.NewNullLogger()
	cfg := config.Config{Gateway: "ws://127.0.0.1:1/ws/agent", AgentID: "a1", StateDir: filepath.Join(t.TempDir(), "state"),
		EnrollmentSecret: "s"}.WithDefaults()
	_, err := New(cfg, "1.0.0", log)
	require.NoError(t, err)
	var warned bool
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.HasPrefix(e.Message, "SECURITY: no signing_public_key configured") {
			warned = true
		}
	}
	require.True(t, warned)
}

// selfSigned writes a certificate and key for cn, signed by ca (or by
// itself when ca is nil), and returns the paths and the parsed certificate.
func selfSigned(t *testing.T, dir, name, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, isCA bool) (string, string, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	cp, kp := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	require.NoError(t, os.WriteFile(cp, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(kp, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	return cp, kp, cert, key
}

// In mTLS mode the agent trusts ca_file and presents its client certificate.
func TestDialerPresentsClientCertificate(t *testing.T) {
	dir := t.TempDir()
	caFile, _, ca, caKey := selfSigned(t, dir, "ca", "test-ca", nil, nil, true)
	srvCert, srvKey, _, _ := selfSigned(t, dir, "server", "127.0.0.1", ca, caKey, false)
	cliCert, cliKey, _, _ := selfSigned(t, dir, "client", "host-1", ca, caKey, false)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	require.NoError(t, err)
	seen := make(chan string, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.TLS.PeerCertificates[0].Subject.CommonName
		if ws, err := up.Upgrade(w, r, nil); err == nil {
			_ = ws.Close()
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()
	url := "wss" + strings.TrimPrefix(srv.URL, "https") + "/ws/agent"

	d, err := newDialer(config.TLS{CAFile: caFile, CertFile: cliCert, KeyFile: cliKey})
	require.NoError(t, err)
	ws, _, err := d.Dial(url, nil)
	require.NoError(t, err)
	_ = ws.Close()
	require.Equal(t, "host-1", <-seen)

	d, err = newDialer(config.TLS{CAFile: caFile})
	require.NoError(t, err)
	_, _, err = d.Dial(url, nil)
	require.Error(t, err, "without the client certificate the server refuses the handshake")

	_, err = newDialer(config.TLS{CAFile: cliKey})
	require.ErrorContains(t, err, "tls.ca_file holds no PEM certificate")
	_, err = newDialer(config.TLS{CertFile: cliCert, KeyFile: caFile})
	require.ErrorContains(t, err, "tls.cert_file/tls.key_file")
}
