// Command agent-gateway holds OS agents' WebSockets (see package gateway).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/pkg/store"
)

const name = "agent-gateway"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg, err := service.LoadConfig(fs, args, 8081)
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := service.Start(ctx, name, cfg)
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 1
	}
	defer p.Close()
	if p.TLS, err = service.GatewayTLS(cfg); err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	gw, err := gateway.New(p.Store, p.Bus, p.Bus, p.Registry, p.Log, gateway.Config{
		GatewayID:         service.InstanceID(cfg),
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
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	mux := http.NewServeMux()
	gw.Register(mux)
	if err := p.Serve(ctx, mux, gw.Run, gw.Shutdown); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}
