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
	"time"

	"github.com/viworks/backend-agent/api-server/apiserver"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
)

const name = "api-server"

func main() { os.Exit(run(os.Args[1:])) }

func newJWT(cfg config.Config) (*auth.JWT, error) {
	return auth.NewJWT(auth.Config{
		Secret: []byte(cfg.Security.JWTSecret), Issuer: cfg.Security.JWTIssuer, Audience: cfg.Security.JWTAudience,
		TTL: cfg.JWTExpiration(),
	})
}

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
	jwt, err := newJWT(cfg)
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
	subject := fs.String("subject", "", "token subject (who the token is for)")
	role := fs.String("role", "", "viewer, operator or admin")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	cfg, err := service.LoadConfig(fs, args, 8080)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" token", err)
		return 2
	}
	r, err := auth.ParseRole(*role)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" token", fmt.Errorf("--role: %w", err))
		return 2
	}
	if *subject == "" {
		service.PrintErrors(os.Stderr, name+" token", fmt.Errorf("--subject is required"))
		return 2
	}
	if *ttl <= 0 || *ttl > 30*24*time.Hour {
		service.PrintErrors(os.Stderr, name+" token", fmt.Errorf("--ttl must be between 1s and 720h"))
		return 2
	}
	jwt, err := newJWT(cfg)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" token", err)
		return 2
	}
	tok, err := jwt.Issue(*subject, r, *ttl)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" token", err)
		return 1
	}
	fmt.Println(tok)
	return 0
}
