// Command agent-gateway holds OS agents' WebSockets (see package gateway).
package main

import (
	"net/http"
	"os"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/pkg/store"
)

func main() {
	os.Exit(service.Main("agent-gateway", 8081, os.Args[1:], func(p *service.Process) (service.Role, error) {
		cfg := p.Cfg
		tlsConfig, err := service.GatewayTLS(cfg)
		if err != nil {
			return service.Role{}, err
		}
		p.TLS = tlsConfig
		gw, err := gateway.New(p.Store, p.Bus, p.Bus, p.Registry, p.Log, gateway.Config{
			Events:            p.Events,
			GatewayID:         p.InstanceID, // also its service_instances id
			EnrollmentSecret:  cfg.Security.AgentEnrollmentSecret,
			HeartbeatInterval: cfg.HeartbeatInterval(),
			TelemetryInterval: cfg.CollectionInterval(),
			MaxConnections:    cfg.AgentManagement.MaxAgentConnections,
			HandshakeTimeout:  cfg.ConnectionTimeout(),
			FlushInterval:     cfg.FlushInterval(),
			TelemetryBatch:    cfg.Telemetry.BatchSize,
			Retry:             store.RetryPolicy{Base: cfg.RetryDelay()},
			DrainWindow:       cfg.DrainWindow(),
			MaxFrameRate:      cfg.AgentManagement.MaxFramesPerSecond,
		})
		if err != nil {
			return service.Role{}, err
		}
		mux := http.NewServeMux()
		gw.Register(mux)
		return service.Role{Mux: mux, Run: gw.Run, Drain: gw.Shutdown}, nil
	}))
}
