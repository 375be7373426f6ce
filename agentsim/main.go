// Command agentsim runs a fleet of simulated OS agents against a gateway:
//
//	agentsim --gateway ws://HOST:PORT/ws/agent --agents N --prefix PFX \
//	    --enrollment-secret S [--site SITE] [--labels k=v,...] \
//	    [--host-telemetry] [--source-ips N] [--heartbeat-interval D] \
//	    [--telemetry-interval D] [--telemetry-when-connected] \
//	    [--min-backoff D] [--max-backoff D]
//
// --site and --labels are only reported: the site and labels that selectors
// match come from the enrollment secret (or an admin). It runs until SIGINT or
// SIGTERM. The logic lives in package sim.
//
//	agentsim conformance --agent-cmd 'COMMAND' [--timeout 10s] [--agent-log FILE]
//
// checks any agent binary against the protocol (docs/protocol.md, Conformance
// kit): it plays the gateway on loopback and prints PASS/FAIL per check.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/viworks/backend-agent/agentsim/sim"
	"github.com/viworks/backend-agent/pkg/buildinfo"
)

func main() {
	if buildinfo.PrintIfAsked(os.Stdout, "agentsim", os.Args[1:]) {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if len(os.Args) > 1 && os.Args[1] == "conformance" {
		code = sim.ConformanceMain(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		code = sim.Main(ctx, os.Args[1:], os.Stderr)
	}
	stop()
	os.Exit(code)
}
