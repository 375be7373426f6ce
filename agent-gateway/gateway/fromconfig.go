package gateway

import (
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/pkg/store"
)

// ConfigFrom is the Config of the gateway gatewayID from the shared
// configuration, without the dependencies NewFromProcess wires (events,
// enrollment limiter).
func ConfigFrom(cfg config.Config, gatewayID string) Config {
	return Config{
		GatewayID:          gatewayID,
		EnrollmentSecret:   cfg.Security.AgentEnrollmentSecret,
		HeartbeatInterval:  cfg.HeartbeatInterval(),
		TelemetryInterval:  cfg.CollectionInterval(),
		MaxConnections:     cfg.AgentManagement.MaxAgentConnections,
		HandshakeTimeout:   cfg.ConnectionTimeout(),
		FlushInterval:      cfg.FlushInterval(),
		TelemetryBatch:     cfg.Telemetry.BatchSize,
		Retry:              store.RetryPolicy{Base: cfg.RetryDelay()},
		DrainWindow:        cfg.DrainWindow(),
		HelloTimeout:       cfg.HelloTimeout(),
		MaxFrameRate:       cfg.AgentManagement.MaxFramesPerSecond,
		TrustReported:      cfg.AgentManagement.TrustReportedAttributes,
		BootstrapMaxAgents: cfg.AgentManagement.BootstrapMaxAgents,

		ReconnectBackoff:     cfg.ReconnectBackoff(),
		MaxReconnectAttempts: cfg.AgentManagement.MaxReconnectAttempts,
	}
}

// NewFromProcess builds the gateway of process p: its Config is
// ConfigFrom(p.Cfg, p.InstanceID) (the gateway id is the process's
// service_instances id), publishing on p's events, counting failed
// enrollments where p's bus is (Redis, shared by every gateway; else memory),
// changed by adjust when not nil. It also sets p.TLS to the agents' TLS
// (security.tls_*), if configured.
func NewFromProcess(p *service.Process, adjust func(*Config)) (*Gateway, error) {
	tlsConfig, err := service.GatewayTLS(p.Cfg)
	if err != nil {
		return nil, err
	}
	p.TLS = tlsConfig
	c := ConfigFrom(p.Cfg, p.InstanceID)
	c.Events = p.Events
	if c.Limiter, err = service.RateLimiter(p.Bus); err != nil {
		return nil, err
	}
	if adjust != nil {
		adjust(&c)
	}
	return New(p.Store, p.Bus, p.Bus, p.Registry, p.Log, c)
}
