package agentsdk

import (
	"crypto/ed25519"
	"errors"
	"sort"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

// Reasons a COMMAND is refused; the result's error is "rejected: <reason>".
const (
	rejectNoTrustedKey   = "no trusted signing key"
	rejectUnknownKey     = "unknown signing key"
	rejectMalformedSig   = "malformed signature"
	rejectBadSignature   = "bad signature"
	rejectWrongAgent     = "wrong agent_id"
	rejectExpired        = "expired"
	rejectIssuedInFuture = "issued in the future"
	rejectInvalidNonce   = "missing or invalid nonce"
	rejectNonceReplay    = "nonce replay"
)

// trustState holds the keys COMMANDs may be signed with: the configured
// TrustedKeys, or the key pinned on first use. Guarded by Agent.mu.
type trustState struct {
	keys     map[string]ed25519.PublicKey
	verifier *signing.Verifier // nil while nothing is trusted
}

func (t *trustState) keyIDs() []string {
	ids := make([]string, 0, len(t.keys))
	for id := range t.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// nonceSet remembers the nonces of the last nonceWindow accepted COMMANDs and
// the execution each one belonged to (kept in Config.StateDir when set, so
// the window survives a restart).
type nonceSet struct {
	ring  []string
	next  int
	execs map[string]nonceEntry // nonce -> its execution
}

type nonceEntry struct {
	executionID string
	expiresAt   time.Time
}

func (n *nonceSet) add(nonce, executionID string, expiresAt time.Time) {
	if _, ok := n.execs[nonce]; ok {
		return
	}
	if len(n.ring) < nonceWindow {
		n.ring = append(n.ring, nonce)
	} else {
		delete(n.execs, n.ring[n.next])
		n.ring[n.next] = nonce
		n.next = (n.next + 1) % nonceWindow
	}
	n.execs[nonce] = nonceEntry{executionID: executionID, expiresAt: expiresAt}
}

// records returns the window oldest first, for saving.
func (n *nonceSet) records() []nonceRecord {
	out := make([]nonceRecord, 0, len(n.ring))
	for i := range n.ring {
		nonce := n.ring[(n.next+i)%len(n.ring)]
		e := n.execs[nonce]
		out = append(out, nonceRecord{Nonce: nonce, ExecutionID: e.executionID, ExpiresAt: e.expiresAt})
	}
	return out
}

func (n *nonceSet) lookup(nonce string) (executionID string, ok bool) {
	e, ok := n.execs[nonce]
	return e.executionID, ok
}

// observeWelcome applies trust on first use to the key a WELCOME announces
// and warns about a clock that differs from the platform's.
func (a *Agent) observeWelcome(w *protocol.Welcome) {
	log := a.log.WithField("session_id", trunc(w.SessionID, protocol.MaxIDLen))
	if !w.ServerTime.IsZero() {
		if d := a.cfg.Clock().Sub(w.ServerTime).Abs(); d > a.cfg.MaxClockSkew {
			log.WithFields(logrus.Fields{"clock_offset": d.String(), "max_clock_skew": a.cfg.MaxClockSkew.String()}).
				Warn("agent clock differs from the platform's by more than MaxClockSkew; commands may be rejected")
		}
	}
	if a.cfg.InsecureSkipVerify {
		return
	}

	var announced ed25519.PublicKey
	announcedID := trunc(w.SigningKeyID, 64)
	log = log.WithField("announced_key_id", announcedID)
	if w.SigningPublicKey != "" || w.SigningKeyID != "" {
		pub, err := signing.DecodePublicKey(w.SigningPublicKey)
		switch {
		case err != nil:
			log.WithError(err).Error("WELCOME announced an invalid signing_public_key; ignoring it")
		case signing.KeyID(pub) != w.SigningKeyID:
			log.WithField("derived_key_id", signing.KeyID(pub)).Error("WELCOME announced a signing_key_id that does not match its signing_public_key; ignoring it")
		default:
			announced = pub
		}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.trust.keys) == 0 {
		// Only with TrustOnFirstUse: Validate refuses any other config
		// without keys.
		if announced == nil {
			log.Warn("WELCOME announced no usable signing key: nothing is trusted yet, commands will be rejected")
			return
		}
		a.trust.keys = map[string]ed25519.PublicKey{w.SigningKeyID: announced}
		a.trust.verifier = signing.NewVerifier(a.trust.keys)
		log.WithField("key_id", w.SigningKeyID).Warn("SECURITY: pinned the platform signing key announced in the first WELCOME (trust on first use); " +
			"pin it in the configuration to protect against an impostor reached first")
		if a.cfg.StateDir != "" {
			if err := savePinnedKey(a.cfg.StateDir, announced); err != nil {
				log.WithError(err).Error("keeping the pinned signing key failed; a restarted agent trusts the first key it sees again")
			}
		}
		return
	}
	if announced == nil {
		return
	}
	if k, ok := a.trust.keys[w.SigningKeyID]; ok && k.Equal(announced) {
		return
	}
	log = log.WithField("trusted_key_ids", a.trust.keyIDs())
	if len(a.cfg.TrustedKeys) == 0 {
		log.Error("SECURITY: WELCOME announced a signing key other than the one pinned on first use; commands signed with it will be rejected")
		return
	}
	log.Warn("WELCOME announced a signing key that is not in TrustedKeys; commands signed with it will be rejected")
}

// checkCommand returns why cmd must not run ("" when it may, as far as
// signature, target, validity window and nonce format go), with the
// verification error if any. verifier is nil while nothing is trusted.
func (a *Agent) checkCommand(cmd *protocol.Command, verifier *signing.Verifier) (reason string, err error) {
	if !a.cfg.InsecureSkipVerify {
		if verifier == nil {
			return rejectNoTrustedKey, nil
		}
		if err := verifier.Verify(*cmd); err != nil {
			switch {
			case errors.Is(err, signing.ErrUnknownKey):
				return rejectUnknownKey, err
			case errors.Is(err, signing.ErrMalformedSignature):
				return rejectMalformedSig, err
			}
			return rejectBadSignature, err
		}
	}
	if cmd.AgentID != a.cfg.AgentID {
		return rejectWrongAgent, nil
	}
	now := a.cfg.Clock()
	if now.After(cmd.ExpiresAt.Add(a.cfg.MaxClockSkew)) {
		return rejectExpired, nil
	}
	if cmd.IssuedAt.After(now.Add(a.cfg.MaxClockSkew)) {
		return rejectIssuedInFuture, nil
	}
	if protocol.CheckID("", cmd.Nonce) != nil {
		return rejectInvalidNonce, nil
	}
	return "", nil
}

// checkNonce refuses a nonce already used by another execution. Called with
// a.mu held.
func (a *Agent) checkNonce(cmd *protocol.Command) string {
	if prev, ok := a.nonces.lookup(cmd.Nonce); ok && prev != cmd.ExecutionID {
		return rejectNonceReplay
	}
	return ""
}

// reject answers a refused COMMAND with a failed result; it never runs.
func (a *Agent) reject(cmd protocol.Command, reason string, err error) {
	entry := a.log.WithFields(logrus.Fields{
		"execution_id":    trunc(cmd.ExecutionID, protocol.MaxIDLen),
		"command_id":      trunc(cmd.CommandID, protocol.MaxIDLen),
		"verb":            trunc(cmd.Verb, 64),
		"target_agent_id": trunc(cmd.AgentID, protocol.MaxIDLen),
		"key_id":          trunc(cmd.KeyID, 64),
		"issued_at":       cmd.IssuedAt.UTC().Format(time.RFC3339Nano),
		"expires_at":      cmd.ExpiresAt.UTC().Format(time.RFC3339Nano),
		"reason":          reason,
	})
	if err != nil {
		entry = entry.WithError(err)
	}
	switch reason {
	case rejectNoTrustedKey, rejectUnknownKey, rejectMalformedSig, rejectBadSignature, rejectNonceReplay, rejectWrongAgent:
		entry.Error("command rejected")
	default:
		entry.Warn("command rejected")
	}
	now := time.Now().UTC()
	a.storeResult(cmd, Result{ExitCode: ExitCodeRejected, Error: "rejected: " + reason}, now, now)
}
