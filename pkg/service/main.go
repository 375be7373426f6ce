package service

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

// Role is what a service binary builds on its started Process: the HTTP
// routes, the role's run loop and, optionally, its drain step on shutdown.
type Role struct {
	Mux   *http.ServeMux
	Run   func(context.Context) error
	Drain func(context.Context)
}

// Main is the whole life of a service binary: configuration from args over the
// defaults with the binary's port, the process (logger, Postgres, Redis), the
// role that build makes of it, and serving until SIGINT or SIGTERM. It returns
// the exit code: 2 for configuration problems, 1 for failures.
func Main(name string, port int, args []string, build func(p *Process) (Role, error)) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg, err := LoadConfig(fs, args, port)
	if err != nil {
		PrintErrors(os.Stderr, name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := Start(ctx, name, cfg)
	if err != nil {
		PrintErrors(os.Stderr, name, err)
		return 1
	}
	defer p.Close()
	role, err := build(p)
	if err != nil {
		PrintErrors(os.Stderr, name, err)
		return 2
	}
	if role.Mux == nil {
		role.Mux = http.NewServeMux()
	}
	if err := p.Serve(ctx, role.Mux, role.Run, role.Drain); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}
