// Command scheduler dispatches executions (see package scheduler); `scheduler
// migrate` applies the database schema and exits.
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

	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/scheduler/alerting"
	"github.com/viworks/backend-agent/scheduler/scheduler"
)

const name = "scheduler"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "migrate" {
		return migrate(args[1:])
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg, err := service.LoadConfig(fs, args, 8082)
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
	signer, err := service.LoadSigner(cfg, p.Log)
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 1
	}
	alerter, err := alerting.New(p.Store, p.Log, p.Registry, alerting.Config{})
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	s, err := scheduler.New(p.Store, p.Bus, p.Bus, p.Registry, p.Log, scheduler.Config{
		RetryDelay: cfg.RetryDelay(), MaxInFlight: cfg.Command.MaxConcurrentCommands, PerAgent: cfg.Command.MaxPerAgent,
		StaleAfter: cfg.StaleAfter(), TelemetryRetention: cfg.Retention(), CommandRetention: cfg.CommandRetention(),
		Signer: signer, Tasks: []scheduler.Task{alerter.Tick},
	})
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	if err := p.Serve(ctx, http.NewServeMux(), s.Run, nil); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

func migrate(args []string) int {
	fs := flag.NewFlagSet(name+" migrate", flag.ContinueOnError)
	cfg, err := service.LoadConfig(fs, args, 8082)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" migrate", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := service.OpenStore(ctx, cfg)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" migrate", err)
		return 1
	}
	defer st.Close()
	applied, err := st.Migrate(ctx)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" migrate", err)
		return 1
	}
	v, err := st.SchemaVersion(ctx)
	if err != nil {
		service.PrintErrors(os.Stderr, name+" migrate", err)
		return 1
	}
	fmt.Printf("schema at version %d (applied %d migrations now)\n", v, len(applied))
	return 0
}
