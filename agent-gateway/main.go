// Command agent-gateway holds OS agents' WebSockets (see package gateway).
package main

import (
	"net/http"
	"os"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/pkg/buildinfo"
	"github.com/viworks/backend-agent/pkg/service"
)

// gatewayGOGC is the gateway's garbage collector target when GOGC is unset.
const gatewayGOGC = 25

func main() {
	if buildinfo.PrintIfAsked(os.Stdout, "agent-gateway", os.Args[1:]) {
		return
	}
	os.Exit(service.Main("agent-gateway", 8081, os.Args[1:], func(p *service.Process) (service.Role, error) {
		// Idle sessions are long-lived heap with little garbage: a low GC target
		// keeps the heap near its live size (GOGC and GOMEMLIMIT still win).
		service.UseMemoryPolicy(p.Log, service.MemoryPolicy{GOGC: gatewayGOGC})
		gw, err := gateway.NewFromProcess(p, nil)
		if err != nil {
			return service.Role{}, err
		}
		mux := http.NewServeMux()
		gw.Register(mux)
		return service.Role{Mux: mux, Run: gw.Run, Drain: gw.Shutdown}, nil
	}))
}
