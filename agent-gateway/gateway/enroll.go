package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

// Enrollment limits.
const (
	maxEnrollBody      = 16 << 10
	enrollFailures     = 10          // wrong secrets per client address ...
	enrollFailWindow   = time.Minute // ... per window, before 429
	maxTrackedClients  = 10000
	maxEnrollSecretLen = 256
)

// HashCredential is how credentials are stored: SHA-256, hex. Credentials are
// 256 random bits, so a fast hash is enough (nothing to brute-force).
func HashCredential(credential string) string {
	sum := sha256.Sum256([]byte(credential))
	return hex.EncodeToString(sum[:])
}

func newCredential() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// failureLimiter counts wrong enrollment secrets per client address.
type failureLimiter struct {
	mu      sync.Mutex
	clients map[string]*failures
}

type failures struct {
	n     int
	since time.Time
}

// blocked reports whether addr has used up its failures in the current window.
func (l *failureLimiter) blocked(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.clients[addr]
	if !ok || now.Sub(f.since) > enrollFailWindow {
		return false
	}
	return f.n >= enrollFailures
}

func (l *failureLimiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients == nil || len(l.clients) >= maxTrackedClients {
		l.clients = map[string]*failures{}
	}
	f, ok := l.clients[addr]
	if !ok || now.Sub(f.since) > enrollFailWindow {
		f = &failures{since: now}
		l.clients[addr] = f
	}
	f.n++
}

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type enrollRequest struct {
	EnrollmentSecret string `json:"enrollment_secret"`
	AgentID          string `json:"agent_id"`
	Hostname         string `json:"hostname"`
	Site             string `json:"site"`
	Version          string `json:"version"`
}

// serveEnroll exchanges an enrollment secret for a per-agent credential:
// random, 256 bits, stored only as a hash; enrolling again rotates it. The
// secret is the bootstrap AGENT_ENROLLMENT_SECRET or one issued through
// POST /api/v1/enrollment-secrets (not revoked, not expired, uses left), whose
// site and labels then win over what the agent claims, now and in every HELLO.
func (g *Gateway) serveEnroll(w http.ResponseWriter, r *http.Request) {
	release, ok := g.admit(w)
	if !ok {
		return
	}
	defer release()
	now := time.Now()
	addr := clientAddr(r)
	if g.enrollLimit.blocked(addr, now) {
		g.metrics.enrollments.WithLabelValues("rate_limited").Inc()
		w.Header().Set("Retry-After", "60")
		problem(w, http.StatusTooManyRequests, "Too Many Requests", "too many failed enrollments from this address; retry later")
		return
	}
	var req enrollRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxEnrollBody))
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem(w, http.StatusRequestEntityTooLarge, "Payload Too Large", "the body is limited to 16 KiB")
			return
		}
		problem(w, http.StatusBadRequest, "Bad Request", "body: a JSON object with enrollment_secret and agent_id is required")
		return
	}
	hello := protocol.Hello{AgentID: req.AgentID, Hostname: req.Hostname, Site: req.Site, Version: req.Version}
	if err := protocol.ValidateHello(&hello); err != nil {
		problem(w, http.StatusBadRequest, "Bad Request", err.Error())
		return
	}
	cred, err := newCredential()
	if err != nil {
		problem(w, http.StatusInternalServerError, "Internal Server Error", "could not create a credential")
		return
	}
	hash := HashCredential(cred)
	details := map[string]any{"client": addr, "hostname": req.Hostname}
	switch {
	case req.EnrollmentSecret == "" || len(req.EnrollmentSecret) > maxEnrollSecretLen:
		g.denyEnroll(w, r, addr, now, req.AgentID)
		return
	case g.cfg.EnrollmentSecret != "" && subtle.ConstantTimeCompare([]byte(req.EnrollmentSecret), []byte(g.cfg.EnrollmentSecret)) == 1:
		// The bootstrap secret (AGENT_ENROLLMENT_SECRET).
		if err := g.grants.submit(r.Context(), store.CredentialGrant{AgentID: req.AgentID, CredentialHash: hash, EnrolledFrom: "bootstrap"}); err != nil {
			g.log.WithError(err).WithField("agent_id", req.AgentID).Error("storing agent credential failed")
			problem(w, http.StatusServiceUnavailable, "Service Unavailable", "could not store the credential; retry")
			return
		}
		details["secret"] = "bootstrap"
	default:
		// A secret issued through the API: one use is spent atomically and its
		// site and labels are imposed on the agent.
		sec, err := g.store.EnrollWithSecret(r.Context(), HashCredential(req.EnrollmentSecret), req.AgentID, hash, now)
		if errors.Is(err, store.ErrUnknownEnrollmentSecret) {
			g.denyEnroll(w, r, addr, now, req.AgentID)
			return
		}
		if err != nil {
			g.log.WithError(err).WithField("agent_id", req.AgentID).Error("enrolling with a stored secret failed")
			problem(w, http.StatusServiceUnavailable, "Service Unavailable", "could not store the credential; retry")
			return
		}
		details["secret"], details["site"], details["labels"] = sec.ID, sec.Site, sec.Labels
	}
	g.issued.put(hash, req.AgentID, time.Now())
	g.metrics.enrollments.WithLabelValues("enrolled").Inc()
	g.audit(r.Context(), "agent:"+req.AgentID, "agent.enroll", req.AgentID, details)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"agent_id": req.AgentID, "credential": cred})
}

// denyEnroll refuses an enrollment. The refusal is counted in memory and
// written as one agent.enroll.denied audit event per client address and
// window (details: count, reasons, agent ids tried): a flood of bad secrets
// does not write to the audit chain per request.
func (g *Gateway) denyEnroll(w http.ResponseWriter, r *http.Request, addr string, now time.Time, agentID string) {
	g.enrollLimit.fail(addr, now)
	g.metrics.enrollments.WithLabelValues("denied").Inc()
	g.refusals.Record(addr, "enrollment secret not valid", agentID, now)
	problem(w, http.StatusUnauthorized, "Unauthorized", "enrollment_secret is not valid")
}

// authenticate returns the agent id the upgrade request proves: a verified
// client certificate (mTLS) or else a bearer credential.
func (g *Gateway) authenticate(r *http.Request) (string, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if id := CertAgentID(r.TLS.VerifiedChains[0][0]); id != "" {
			return id, nil
		}
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" || len(tok) > 512 {
		return "", store.ErrUnknownCredential
	}
	hash := HashCredential(tok)
	if id, ok := g.issued.take(hash, time.Now()); ok {
		return id, nil
	}
	return g.store.AgentForCredential(r.Context(), hash)
}

// CertAgentID is the agent id a client certificate names: a URI SAN
// viworks://agent/<id>, else the subject CN.
func CertAgentID(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == "viworks" && u.Host == "agent" {
			if id := strings.TrimPrefix(u.Path, "/"); protocol.CheckID("", id) == nil {
				return id
			}
		}
	}
	if id := c.Subject.CommonName; protocol.CheckID("", id) == nil {
		return id
	}
	return ""
}

func (g *Gateway) audit(ctx context.Context, actor, action, target string, details map[string]any) {
	raw, _ := json.Marshal(details)
	client, _ := details["client"].(string)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := g.audits.submit(ctx, store.AuditEvent{Actor: actor, Action: action, Target: target, ClientIP: client, Details: raw, At: time.Now().UTC()}); err != nil {
		g.log.WithError(err).WithField("action", action).Warn("writing audit event failed")
	}
}
