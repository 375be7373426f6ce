package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/viworks/backend-agent/pkg/config"
)

// GatewayTLS builds the gateway's TLS configuration from
// [agent_management] tls_cert_path/tls_key_path/client_ca_path; nil when TLS is
// not configured. With a client CA, client certificates are verified when
// presented (agents may still use a bearer credential instead).
func GatewayTLS(cfg config.Config) (*tls.Config, error) {
	a := cfg.AgentManagement
	if a.TLSCertPath == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(a.TLSCertPath, a.TLSKeyPath)
	if err != nil {
		return nil, fmt.Errorf("gateway TLS certificate (GATEWAY_TLS_CERT, GATEWAY_TLS_KEY): %w", err)
	}
	t := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if a.ClientCAPath != "" {
		pem, err := os.ReadFile(a.ClientCAPath)
		if err != nil {
			return nil, fmt.Errorf("gateway client CA (GATEWAY_CLIENT_CA): %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("gateway client CA (GATEWAY_CLIENT_CA): no PEM certificate in the file")
		}
		t.ClientCAs = pool
		t.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return t, nil
}
