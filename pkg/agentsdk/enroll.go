package agentsdk

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/viworks/backend-agent/pkg/atomicfile"
)

// EnrollPath is the gateway's enrollment endpoint.
const EnrollPath = "/agent/v1/enroll"

// EnrollError is a refused enrollment.
type EnrollError struct {
	Status     int
	Detail     string
	RetryAfter time.Duration
}

func (e *EnrollError) Error() string {
	return fmt.Sprintf("enrollment refused: HTTP %d: %s", e.Status, e.Detail)
}

// enrollURL derives the enrollment endpoint from the WebSocket URL.
func enrollURL(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	u.Path = EnrollPath
	u.RawQuery = ""
	return u.String(), nil
}

// credential returns the credential to present, enrolling first when the
// agent has none and holds an enrollment secret.
func (a *Agent) credential(ctx context.Context) (string, error) {
	a.mu.Lock()
	cred := a.cred
	a.mu.Unlock()
	if cred != "" || a.cfg.EnrollmentSecret == "" {
		return cred, nil
	}
	cred, err := a.enroll(ctx)
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	a.cred = cred
	a.mu.Unlock()
	if path := a.cfg.credentialPath(); path != "" {
		if err := atomicfile.Write(path, []byte(cred+"\n")); err != nil {
			a.log.WithError(err).Error("saving the enrolled credential failed; after a restart this agent cannot enroll again by itself")
		}
	}
	return cred, nil
}

// forgetCredential drops a refused credential so the next attempt enrolls
// again (only when the agent can: it holds an enrollment secret).
func (a *Agent) forgetCredential(cred string) {
	if a.cfg.EnrollmentSecret == "" {
		return
	}
	a.mu.Lock()
	if a.cred == cred {
		a.cred = ""
	}
	a.mu.Unlock()
}

type enrollRequest struct {
	EnrollmentSecret string `json:"enrollment_secret"`
	Credential       string `json:"credential,omitempty"` // proposed; the gateway answers it again on a retry
	AgentID          string `json:"agent_id"`
	Hostname         string `json:"hostname,omitempty"`
	Site             string `json:"site,omitempty"`
	Version          string `json:"version,omitempty"`
}

type enrollResponse struct {
	AgentID    string `json:"agent_id"`
	Credential string `json:"credential"`
}

func (a *Agent) enroll(ctx context.Context) (string, error) {
	target := a.cfg.EnrollURL
	if target == "" {
		var err error
		if target, err = enrollURL(a.cfg.URL); err != nil {
			return "", fmt.Errorf("deriving the enrollment URL: %w", err)
		}
	}
	proposal, err := a.proposedCredential()
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(enrollRequest{
		EnrollmentSecret: a.cfg.EnrollmentSecret, Credential: proposal, AgentID: a.cfg.AgentID,
		Hostname: a.cfg.Hostname, Site: a.cfg.Site, Version: a.cfg.Version,
	})
	if err != nil {
		return "", err
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	// One request per enrollment: no idle connection (and file) kept open.
	// Same TLS and dialing (e.g. source address) as the WebSocket.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: a.cfg.Dialer.TLSClientConfig, Proxy: http.ProxyFromEnvironment,
		DialContext: a.cfg.Dialer.NetDialContext, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		// The outcome is unknown: the next attempt proposes the same
		// credential, which the gateway answers again if this one succeeded.
		return "", fmt.Errorf("enrolling: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated {
		if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			a.dropProposal() // refused: nothing was stored, the next attempt proposes another
		}
		return "", &EnrollError{Status: resp.StatusCode, Detail: strings.TrimSpace(trunc(string(raw), 200)),
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	var out enrollResponse
	if err := json.Unmarshal(raw, &out); err != nil || out.Credential == "" || out.AgentID != a.cfg.AgentID {
		return "", fmt.Errorf("enrolling: unexpected answer from the gateway")
	}
	a.dropProposal()
	a.log.Info("agent enrolled")
	return out.Credential, nil
}

// proposedCredential is the credential the next enrollment proposes: the one
// of an attempt whose outcome is unknown, else 256 new random bits. With a
// state directory it is saved before it is sent, so a restart in between
// connects with it (or, refused, enrolls afresh).
func (a *Agent) proposedCredential() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proposal != "" {
		return a.proposal, nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a credential: %w", err)
	}
	a.proposal = base64.RawURLEncoding.EncodeToString(b)
	if path := a.cfg.credentialPath(); path != "" {
		if err := atomicfile.Write(path, []byte(a.proposal+"\n")); err != nil {
			return "", fmt.Errorf("saving the proposed credential: %w", err)
		}
	}
	return a.proposal, nil
}

func (a *Agent) dropProposal() {
	a.mu.Lock()
	a.proposal = ""
	a.mu.Unlock()
}
