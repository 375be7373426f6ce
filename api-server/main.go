// Command api-server serves the REST API (see package apiserver); `api-server
// token` prints a JWT signed with the configured secret.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/viworks/backend-agent/api-server/apiserver"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
)

const name = "api-server"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:])
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg, err := service.LoadConfig(fs, args, 8080)
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	jwt, err := service.NewJWT(cfg)
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
	api, err := apiserver.New(p.Store, p.Bus, jwt, p.Registry, p.Log, apiserver.Config{
		DefaultTimeout:    cfg.CommandTimeout(),
		DefaultMaxRetries: cfg.Command.RetryAttempts,
		MaxQueued:         cfg.Command.MaxCommandQueueSize,
	})
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", api.Handler())
	wait := func(ctx context.Context) error { <-ctx.Done(); return nil }
	if err := p.Serve(ctx, mux, wait, nil); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

func token(args []string) int {
	fs := flag.NewFlagSet(name+" token", flag.ContinueOnError)
	return service.Token(name+" token", fs, args, func() (config.Config, error) {
		base := config.Default()
		base.Server.Port = 8080
		return base, nil
	})
}
