package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "viworks test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate; it returns cert and key PEM.
func (ca testCA) issue(t *testing.T, cn string, uris []*url.URL, server bool) ([]byte, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, URIs: uris,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestMutualTLSIdentity(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	ca := newCA(t)
	srvCert, srvKey := ca.issue(t, "gateway", nil, true)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	c.Env = append(c.Env, "GATEWAY_TLS_CERT="+write("srv.crt", srvCert), "GATEWAY_TLS_KEY="+write("srv.key", srvKey), "GATEWAY_CLIENT_CA="+write("ca.crt", ca.pem))
	sys := startSystemTLS(t, c)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.pem)
	clientTLS := func(cn string, uri string) *tls.Config {
		var uris []*url.URL
		if uri != "" {
			u, err := url.Parse(uri)
			require.NoError(t, err)
			uris = append(uris, u)
		}
		certPEM, keyPEM := ca.issue(t, cn, uris, false)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		require.NoError(t, err)
		return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots}
	}

	// An agent whose identity is its certificate (URI SAN), no credential at all.
	agent, err := agentsdk.New(agentsdk.Config{
		URL: sys.gateways[0], AgentID: "mtls-0", TrustOnFirstUse: true,
		Handlers: map[string]agentsdk.HandlerFunc{"echo": func(_ context.Context, cmd protocol.Command) agentsdk.Result {
			return agentsdk.Result{Output: string(cmd.Args)}
		}},
		Dialer: &websocket.Dialer{TLSClientConfig: clientTLS("ignored-cn", "viworks://agent/mtls-0"), HandshakeTimeout: 5 * time.Second},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = agent.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	require.NoError(t, agent.WaitConnected(wctx))
	var created commandView
	require.Equal(t, http.StatusAccepted, sys.api.do(t, http.MethodPost, "/api/v1/commands", map[string]any{
		"verb": "echo", "args": map[string]any{"x": 1}, "agent_targets": []string{"mtls-0"},
	}, &created))
	done := sys.waitCommand(t, created.ID, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, "succeeded", done.Status)

	// A certificate for mtls-1 (by CN) cannot say HELLO as mtls-0.
	d := websocket.Dialer{TLSClientConfig: clientTLS("mtls-1", ""), HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(sys.gateways[0], nil)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"HELLO","payload":{"agent_id":"mtls-0"}}`)))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := conn.ReadMessage()
	require.NoError(t, err)
	require.Contains(t, string(msg), "identity_mismatch")

	// No certificate and no credential: refused before the upgrade.
	anon := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots}, HandshakeTimeout: 5 * time.Second}
	_, resp, err := anon.Dial(sys.gateways[0], nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// startSystemTLS is startSystem with one gateway serving wss:// (its readiness
// probed over TLS too).
func startSystemTLS(t *testing.T, c *testCluster) system {
	t.Helper()
	_, err := c.run("scheduler", "migrate")
	require.NoError(t, err)
	schedPort, apiPort, gwPort := freePort(t), freePort(t), freePort(t)
	sched := c.start("scheduler", "scheduler", nil, "--port", strconv.Itoa(schedPort))
	apiProc := c.start("api-server", "api-server", nil, "--port", strconv.Itoa(apiPort))
	gw := c.start("gateway-tls", "agent-gateway", []string{"VIWORKS_INSTANCE_ID=gw-tls"}, "--port", strconv.Itoa(gwPort))
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", schedPort), sched)
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", apiPort), apiProc)
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // probing readiness only
	require.Eventually(t, func() bool {
		resp, err := insecure.Get(fmt.Sprintf("https://127.0.0.1:%d/readyz", gwPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "gateway-tls not ready:\n%s", gw.Tail(2000))
	tok, err := c.run("api-server", "token", "--subject", "e2e-operator", "--role", "operator")
	require.NoError(t, err)
	return system{
		api:       api{base: fmt.Sprintf("http://127.0.0.1:%d", apiPort), token: strings.TrimSpace(tok)},
		gateways:  []string{fmt.Sprintf("wss://127.0.0.1:%d/ws/agent", gwPort)},
		enrollKey: c.getenv("AGENT_ENROLLMENT_SECRET"),
	}
}
