package gateway

import (
	"context"

	"github.com/viworks/backend-agent/pkg/store"
)

// refreshKey loads the newest signing key the schedulers registered.
func (g *Gateway) refreshKey(ctx context.Context) {
	keys, err := g.store.SigningKeys(ctx)
	if err != nil {
		g.log.WithError(err).Warn("loading signing keys failed")
		return
	}
	if len(keys) == 0 {
		return
	}
	g.keyMu.Lock()
	g.key = keys[0]
	g.keyMu.Unlock()
}

func (g *Gateway) signingKey() store.SigningKey {
	g.keyMu.RLock()
	defer g.keyMu.RUnlock()
	return g.key
}
