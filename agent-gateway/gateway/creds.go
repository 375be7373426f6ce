package gateway

import (
	"sync"
	"time"
)

// credentialWriters is how many credential lookups may be in flight at once.
const credentialWriters = 2

// newCredentialLookups returns the group that looks the upgrades' credential
// hashes up: a reconnect storm costs one query per batch of upgrades, not one
// per agent. An outcome is the agent id, "" for an unknown credential.
func (g *Gateway) newCredentialLookups() *group[string, string] {
	return newGroup("credential", credentialWriters, g.store.AgentsForCredentials, g.log,
		g.metrics.groupSize.WithLabelValues("credential"), g.metrics.groupLatency.WithLabelValues("credential"))
}

// issuedTTL bounds how long a credential this gateway just issued may skip the
// database lookup on its first upgrade (so a rotation or revocation elsewhere
// is honoured after at most this long).
const issuedTTL = 10 * time.Second

// maxIssued bounds the cache; beyond it, new credentials are simply looked up.
const maxIssued = 65536

// issuedCreds remembers the credentials this gateway issued in the last
// issuedTTL, by hash: an agent's first upgrade right after enrolling (the
// connect storm of a fleet starting) then needs no credential query. An entry
// is used once, and enrolling again replaces the agent's previous entry.
type issuedCreds struct {
	mu      sync.Mutex
	byHash  map[string]issued
	byAgent map[string]string // agent id → hash of its newest issued credential
}

type issued struct {
	agentID string
	at      time.Time
}

func (c *issuedCreds) put(hash, agentID string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byHash == nil {
		c.byHash, c.byAgent = map[string]issued{}, map[string]string{}
	}
	if old, ok := c.byAgent[agentID]; ok {
		delete(c.byHash, old)
	}
	if len(c.byHash) >= maxIssued {
		c.expire(now)
		if len(c.byHash) >= maxIssued {
			return
		}
	}
	c.byHash[hash] = issued{agentID: agentID, at: now}
	c.byAgent[agentID] = hash
}

// take returns the agent a fresh issued credential belongs to and forgets it.
func (c *issuedCreds) take(hash string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byHash[hash]
	if !ok {
		return "", false
	}
	delete(c.byHash, hash)
	if c.byAgent[e.agentID] == hash {
		delete(c.byAgent, e.agentID)
	}
	if now.Sub(e.at) > issuedTTL {
		return "", false
	}
	return e.agentID, true
}

// forget drops the credential issued to agentID (revoked or deleted).
func (c *issuedCreds) forget(agentID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.byAgent[agentID]; ok {
		delete(c.byHash, h)
		delete(c.byAgent, agentID)
	}
}

// expire drops entries older than issuedTTL (called with mu held).
func (c *issuedCreds) expire(now time.Time) {
	for h, e := range c.byHash {
		if now.Sub(e.at) > issuedTTL {
			delete(c.byHash, h)
			if c.byAgent[e.agentID] == h {
				delete(c.byAgent, e.agentID)
			}
		}
	}
}

// sweep drops expired entries.
func (c *issuedCreds) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
}
