// Command agent-gateway holds OS agents' WebSockets (see package gateway).
package main

import (
	"net/http"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/pkg/store"
)

// gatewayGOGC is the gateway's garbage collector target when GOGC is unset.
const gatewayGOGC = 25

func main() {
	os.Exit(service.Main("agent-gateway", 8081, os.Args[1:], func(p *service.Process) (service.Role, error) {
		cfg := p.Cfg
		// Idle sessions are long-lived heap with little garbage: a low GC target
		// keeps the heap near its live size (GOGC and GOMEMLIMIT still win).
		mem := service.ApplyMemoryPolicy(service.MemoryPolicy{GOGC: gatewayGOGC})
		p.Log.WithFields(logrus.Fields{"gogc": mem.GOGC, "gogc_from": mem.GOGCFrom, "memory_limit_bytes": mem.Limit, "memory_limit_from": mem.LimitFrom}).Info("memory policy applied")
		tlsConfig, err := service.GatewayTLS(cfg)
		if err != nil {
			return service.Role{}, err
		}
		p.TLS = tlsConfig
		// Failed enrollments are counted in Redis, shared by every gateway.
		limiter, err := service.RateLimiter(p.Bus)
		if err != nil {
			return service.Role{}, err
		}
		gw, err := gateway.New(p.Store, p.Bus, p.Bus, p.Registry, p.Log, gateway.Config{
			Events:             p.Events,
			GatewayID:          p.InstanceID, // also its service_instances id
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
			Limiter:            limiter,
		})
		if err != nil {
			return service.Role{}, err
		}
		mux := http.NewServeMux()
		gw.Register(mux)
		return service.Role{Mux: mux, Run: gw.Run, Drain: gw.Shutdown}, nil
	}))
}
