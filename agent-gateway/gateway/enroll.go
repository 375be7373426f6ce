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
	"time"

	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/problem"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/ratelimit"
	"github.com/viworks/backend-agent/pkg/store"
)

// Enrollment limits.
const (
	maxEnrollBody      = 16 << 10
	maxEnrollSecretLen = 256
	maxCredentialLen   = 512
	// maxProposedCredentialLen bounds a credential an agent proposes.
	maxProposedCredentialLen = 128
)

// enrollFailLimit bounds failed enrollments (a wrong secret or credential) per
// client address: 10 a minute, counted in the limiter every gateway shares.
var enrollFailLimit = ratelimit.Limit{Requests: 10, Window: time.Minute}

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

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type enrollRequest struct {
	EnrollmentSecret string `json:"enrollment_secret"`
	// Credential is the credential the agent proposes (optional).
	Credential string `json:"credential"`
	AgentID    string `json:"agent_id"`
	Hostname   string `json:"hostname"`
	Site       string `json:"site"`
	Version    string `json:"version"`
}

// Why an enrollment is refused: the metric label, the audit detail and the
// event's reason.
const (
	refuseBadSecret     = "bad_secret"          //nolint:gosec // G101: a refusal reason, not a secret
	refuseBadCredential = "bad_credential"      // rotation without the id's live credential
	refuseEnrolled      = "already_enrolled"    // the id has a live identity
	refuseRevoked       = "revoked"             // an admin revoked the id and has not lifted the block
	refuseIDNotAllowed  = "id_not_allowed"      // outside the secret's agent_id_pattern
	refuseMaxAgents     = "max_agents"          // the secret created its maximum of identities
	refuseRateLimited   = "rate_limited"        // too many failures from this address
	refuseLimiterDown   = "limiter_unavailable" // failures cannot be counted: closed
)

type enrollRefusal struct {
	status     int
	detail     string
	failure    bool // counted against the address's failure budget
	retryAfter string
}

var refusals = map[string]enrollRefusal{
	refuseBadSecret:     {status: http.StatusUnauthorized, detail: "enrollment_secret is not valid", failure: true},
	refuseBadCredential: {status: http.StatusUnauthorized, detail: "the bearer credential is not this agent's current credential", failure: true},
	refuseEnrolled: {status: http.StatusConflict, detail: "agent_id is already enrolled: rotate by sending its current credential " +
		"as Authorization: Bearer, or use a re-enrollment secret an admin issued for this id"},
	refuseRevoked:      {status: http.StatusConflict, detail: "agent_id was revoked: an admin must lift the block (POST /api/v1/agents/{id}/unrevoke) or issue a re-enrollment secret"},
	refuseIDNotAllowed: {status: http.StatusForbidden, detail: "agent_id is not allowed by this enrollment secret"},
	refuseMaxAgents:    {status: http.StatusForbidden, detail: "this enrollment secret has enrolled its maximum number of agents"},
	refuseRateLimited:  {status: http.StatusTooManyRequests, detail: "too many failed enrollments from this address; retry later", retryAfter: "60"},
	refuseLimiterDown:  {status: http.StatusServiceUnavailable, detail: "enrollment is unavailable; retry later", retryAfter: "5"},
}

// refusalFor maps a store refusal to its reason; ok is false for other errors.
func refusalFor(err error) (reason string, ok bool) {
	switch {
	case errors.Is(err, store.ErrUnknownEnrollmentSecret), errors.Is(err, store.ErrUnknownReenrollSecret):
		return refuseBadSecret, true
	case errors.Is(err, store.ErrUnknownCredential):
		return refuseBadCredential, true
	case errors.Is(err, store.ErrAgentEnrolled):
		return refuseEnrolled, true
	case errors.Is(err, store.ErrAgentRevoked):
		return refuseRevoked, true
	case errors.Is(err, store.ErrAgentIDNotAllowed):
		return refuseIDNotAllowed, true
	case errors.Is(err, store.ErrMaxAgents):
		return refuseMaxAgents, true
	}
	return "", false
}

// serveEnroll exchanges an enrollment secret for a per-agent credential: at
// least 256 random bits (proposed by the agent, or made here), stored only as
// a hash. Enrolling creates an identity and
// never replaces a live one: an enrolled id gets a new credential only by
// proving its current one (rotation: Authorization: Bearer <credential>) or
// with the single-use re-enrollment secret an admin issued for it. The
// secret is the bootstrap AGENT_ENROLLMENT_SECRET (optionally capped), one
// issued through POST /api/v1/enrollment-secrets (not revoked, not expired,
// uses left, the id matching its pattern), whose site, labels and allowed
// capabilities then are the agent's trusted ones (what it claims in HELLO is
// only reported), or a re-enrollment secret.
func (g *Gateway) serveEnroll(w http.ResponseWriter, r *http.Request) {
	release, ok := g.admit(w)
	if !ok {
		return
	}
	defer release()
	now := time.Now()
	addr := clientAddr(r)
	// Fail closed: when the shared limiter cannot tell, no secret is checked.
	lim, err := g.limiter.Peek(r.Context(), enrollFailKey(addr), enrollFailLimit)
	if err != nil {
		g.log.WithError(err).Error("checking the enrollment failure limit failed")
		g.refuseEnroll(w, r, addr, "", refuseLimiterDown)
		return
	}
	if !lim.Allowed {
		g.refuseEnroll(w, r, addr, "", refuseRateLimited)
		return
	}
	var req enrollRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxEnrollBody))
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			problem.Write(w, http.StatusRequestEntityTooLarge, "the body is limited to 16 KiB", r.URL.Path, nil)
			return
		}
		problem.Write(w, http.StatusBadRequest, "body: a JSON object with enrollment_secret and agent_id is required", r.URL.Path, nil)
		return
	}
	hello := protocol.Hello{AgentID: req.AgentID, Hostname: req.Hostname, Site: req.Site, Version: req.Version}
	if err := protocol.ValidateHello(&hello); err != nil {
		problem.Write(w, http.StatusBadRequest, err.Error(), r.URL.Path, nil)
		return
	}
	// An agent may propose its credential (256 random bits or more), so that
	// retrying an enrollment whose answer it lost is answered again instead of
	// refused as a takeover; else the gateway makes one.
	cred := req.Credential
	if cred != "" && !validProposedCredential(cred) {
		problem.Write(w, http.StatusBadRequest, "credential: 43 to 128 characters of A-Z a-z 0-9 - _ (at least 256 random bits, base64url)", r.URL.Path,
			[]problem.FieldError{{Field: "credential", Message: "43 to 128 characters of A-Z a-z 0-9 - _"}})
		return
	}
	if cred == "" {
		var err error
		if cred, err = newCredential(); err != nil {
			problem.Write(w, http.StatusInternalServerError, "could not create a credential", r.URL.Path, nil)
			return
		}
	}
	hash := HashCredential(cred)
	details := map[string]any{"client": addr, "hostname": req.Hostname}
	current, rotating := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case rotating:
		// Rotation: the agent proves its current credential.
		if current == "" || len(current) > maxCredentialLen {
			g.refuseEnroll(w, r, addr, req.AgentID, refuseBadCredential)
			return
		}
		err = g.store.RotateAgentCredential(r.Context(), req.AgentID, HashCredential(current), hash, now)
		details["via"] = store.FromRotation
	case req.EnrollmentSecret == "" || len(req.EnrollmentSecret) > maxEnrollSecretLen:
		g.refuseEnroll(w, r, addr, req.AgentID, refuseBadSecret)
		return
	case g.cfg.EnrollmentSecret != "" && subtle.ConstantTimeCompare([]byte(req.EnrollmentSecret), []byte(g.cfg.EnrollmentSecret)) == 1:
		// The bootstrap secret (AGENT_ENROLLMENT_SECRET).
		err = g.store.EnrollBootstrap(r.Context(), req.AgentID, hash, g.cfg.BootstrapMaxAgents, now)
		details["via"], details["secret"] = store.FromBootstrap, "bootstrap"
	case strings.HasPrefix(req.EnrollmentSecret, store.ReenrollSecretPrefix):
		// A re-enrollment secret an admin issued for this id: spent once.
		err = g.store.ReenrollAgent(r.Context(), req.AgentID, HashCredential(req.EnrollmentSecret), hash, now)
		details["via"] = store.FromReenroll
	default:
		// A secret issued through the API: one use is spent atomically and its
		// site, labels and allowed capabilities are the agent's trusted ones.
		var sec store.EnrollmentSecret
		sec, err = g.store.EnrollWithSecret(r.Context(), HashCredential(req.EnrollmentSecret), req.AgentID, hash, now)
		if err == nil {
			details["via"], details["secret"], details["site"], details["labels"], details["allowed_capabilities"] = "secret", sec.ID, sec.Site, sec.Labels, sec.AllowedCapabilities
		}
	}
	if reason, refused := refusalFor(err); refused {
		g.refuseEnroll(w, r, addr, req.AgentID, reason)
		return
	}
	if err != nil {
		g.log.WithError(err).WithField("agent_id", req.AgentID).Error("storing agent credential failed")
		problem.Write(w, http.StatusServiceUnavailable, "could not store the credential; retry", r.URL.Path, nil)
		return
	}
	g.issued.put(hash, req.AgentID, time.Now())
	g.metrics.enrollments.WithLabelValues("enrolled").Inc()
	g.audit(r.Context(), "agent:"+req.AgentID, "agent.enroll", req.AgentID, details)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"agent_id": req.AgentID, "credential": cred})
}

func enrollFailKey(addr string) string { return "enroll-fail:" + addr }

// refuseEnroll is the one way an enrollment is refused: it counts a failure
// against the address when the reason is one (a wrong secret or credential),
// counts the metric, feeds the aggregated audit, publishes an
// agent.enroll_refused event and answers problem+json saying what is needed,
// no more.
func (g *Gateway) refuseEnroll(w http.ResponseWriter, r *http.Request, addr, agentID, reason string) {
	rf := refusals[reason]
	if rf.failure {
		if _, err := g.limiter.Allow(r.Context(), enrollFailKey(addr), enrollFailLimit); err != nil {
			g.log.WithError(err).Warn("counting a failed enrollment failed")
		}
	}
	g.metrics.enrollments.WithLabelValues(reason).Inc()
	// Audited once per client address and window (details: count, reasons,
	// agent ids tried): a flood of bad secrets does not write to the audit
	// chain per request.
	g.refusals.Record(addr, reason, agentID, time.Now())
	g.cfg.Events.Agent(r.Context(), events.AgentEnrollRefused, agentID, g.cfg.GatewayID, reason)
	if rf.retryAfter != "" {
		w.Header().Set("Retry-After", rf.retryAfter)
	}
	problem.Write(w, rf.status, rf.detail, r.URL.Path, nil)
}

// authenticate returns the agent id the upgrade request proves: a verified
// client certificate (mTLS) or else a bearer credential.
func (g *Gateway) authenticate(r *http.Request) (string, error) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		if id := CertAgentID(r.TLS.VerifiedChains[0][0]); id != "" {
			// A certificate stays valid until it expires: an admin's
			// revocation of the id is what refuses it.
			blocked, err := g.store.AgentEnrollBlocked(r.Context(), id)
			if err != nil {
				return "", err
			}
			if blocked {
				return "", store.ErrUnknownCredential
			}
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
	id, err := g.creds.submit(r.Context(), hash)
	switch {
	case err != nil:
		return "", err
	case id == "":
		return "", store.ErrUnknownCredential
	}
	return id, nil
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
	if _, err := g.audits.submit(ctx, store.AuditEvent{Actor: actor, Action: action, Target: target, ClientIP: client, Details: raw, At: time.Now().UTC()}); err != nil {
		g.log.WithError(err).WithField("action", action).Warn("writing audit event failed")
	}
}

// validProposedCredential reports whether a proposed credential has the form
// of at least 256 random bits in base64url: 43 to 128 characters of the
// base64url alphabet.
func validProposedCredential(c string) bool {
	if len(c) < 43 || len(c) > maxProposedCredentialLen {
		return false
	}
	for _, r := range c {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
