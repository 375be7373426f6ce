package apiserver

import (
	"context"
	"sync"
	"time"

	"github.com/viworks/backend-agent/pkg/auth"
)

// Token revocation: a token exchanged for an API key (POST /auth/token)
// carries the key's id in its "api_key" claim; once the key is revoked
// (DELETE /api-keys/{id}) every token of it is refused. The revocation is the
// key's revoked_at in the database, so it holds across replicas and restarts;
// each replica caches the answer per key for Config.RevocationCacheTTL, which
// bounds how long another replica keeps accepting a revoked key's tokens (the
// replica that revoked forgets its entry at once). Keys are bounded
// (store.MaxAPIKeys live) and their ids come only from verified tokens, so the
// cache is bounded too. Tokens minted by the `token` subcommand carry no key:
// they end at their exp, or all at once by rotating security.jwt_secret.

// revocations caches, per API key id, whether its tokens are revoked.
type revocations struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]revocationEntry
}

type revocationEntry struct {
	revoked bool
	at      time.Time
}

// maxRevocationEntries bounds the cache; past it, it is emptied (a key
// answers from the database on its next request).
const maxRevocationEntries = 4096

func newRevocations(ttl time.Duration) *revocations {
	return &revocations{ttl: ttl, m: map[string]revocationEntry{}}
}

// revoked reports whether p's token must be refused because its API key was
// revoked; errors come from the store (the caller fails closed).
func (s *Server) revoked(ctx context.Context, p auth.Principal) (bool, error) {
	if p.APIKeyID == "" {
		return false, nil
	}
	r := s.revocations
	now := time.Now()
	r.mu.Lock()
	e, ok := r.m[p.APIKeyID]
	r.mu.Unlock()
	if ok && (e.revoked || now.Sub(e.at) < r.ttl) {
		return e.revoked, nil // a revocation is final: no need to ask again
	}
	revoked, err := s.store.APIKeyRevoked(ctx, p.APIKeyID)
	if err != nil {
		return false, err
	}
	r.mu.Lock()
	if len(r.m) >= maxRevocationEntries {
		clear(r.m)
	}
	r.m[p.APIKeyID] = revocationEntry{revoked: revoked, at: now}
	r.mu.Unlock()
	return revoked, nil
}

// forget drops the cached answer of key id (it was just revoked here).
func (r *revocations) forget(id string) {
	r.mu.Lock()
	delete(r.m, id)
	r.mu.Unlock()
}
