package apiserver

import (
	"net/http"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/service"
)

// ConfigFrom is the API's Config from the shared configuration, without the
// dependencies NewFromProcess builds (limiter, args keyring, webhook targets,
// audit heads).
func ConfigFrom(cfg config.Config) Config {
	return Config{
		DefaultTimeout:    cfg.CommandTimeout(),
		DefaultMaxRetries: cfg.Command.RetryAttempts,
		MaxQueued:         cfg.Command.MaxCommandQueueSize,
		HeartbeatInterval: cfg.HeartbeatInterval(),
		StaleAfter:        cfg.StaleAfter(),
		RateLimit:         service.RateLimit(cfg),
		TrustedProxies:    cfg.Security.TrustedProxies,
		Events:            events.HubConfig{MaxPerOwner: cfg.Server.MaxEventStreamsPerPrincipal},
		MaxInFlight:       cfg.Server.MaxConnections,
		RequestTimeout:    cfg.RequestTimeout(),
	}
}

// NewFromProcess builds the API of process p, verifying tokens with v: its
// Config is ConfigFrom(p.Cfg), with the rate limits counted where p's bus is
// (Redis, else memory), the args keyring and webhook targets of p.Cfg, and
// p's audit heads.
func NewFromProcess(p *service.Process, v Verifier) (*Server, error) {
	c := ConfigFrom(p.Cfg)
	var err error
	if c.Limiter, err = service.RateLimiter(p.Bus); err != nil {
		return nil, err
	}
	if c.Args, err = service.ArgsKeyring(p.Cfg, p.Log); err != nil {
		return nil, err
	}
	if c.Webhooks, err = service.WebhookTargets(p.Cfg); err != nil {
		return nil, err
	}
	c.AuditHeads = p.AuditHeads
	return New(p.Store, p.Bus, v, p.Registry, p.Log, c)
}

// Register mounts the API under /api/ on mux, and the dashboard at /.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("/api/", s.Handler())
	s.registerDashboard(mux)
}
