// Command scheduler dispatches executions (see package scheduler); `scheduler
// migrate` applies the database schema and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/viworks/backend-agent/pkg/audithead"
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
	return service.Main(name, 8082, args, func(p *service.Process) (service.Role, error) {
		cfg := p.Cfg
		signer, err := service.LoadSigner(cfg, p.Log)
		if err != nil {
			return service.Role{}, err
		}
		args, err := service.ArgsKeyring(cfg, p.Log)
		if err != nil {
			return service.Role{}, err
		}
		targets, err := service.WebhookTargets(cfg)
		if err != nil {
			return service.Role{}, err
		}
		alerter, err := alerting.New(p.Store, p.Log, p.Registry, alerting.Config{
			Events: p.Events, Targets: targets, StoreResponseBody: cfg.Alerts.WebhookStoreResponseBody,
		})
		if err != nil {
			return service.Role{}, err
		}
		heads, err := audithead.New(p.Store, service.AuditHeads(p.Bus, ""), p.Log, audithead.Config{})
		if err != nil {
			return service.Role{}, err
		}
		s, err := scheduler.New(p.Store, p.Bus, p.Bus, p.Registry, p.Log, scheduler.Config{
			Events:     p.Events,
			RetryDelay: cfg.RetryDelay(), MaxInFlight: cfg.Command.MaxConcurrentCommands, PerAgent: cfg.Command.MaxPerAgent,
			BatchSize:  cfg.Command.DispatchBatchSize,
			StaleAfter: cfg.StaleAfter(), TelemetryRetention: cfg.Retention(), CommandRetention: cfg.CommandRetention(),
			Signer: signer, Args: args, Tasks: []scheduler.Task{alerter.Tick, heads.Tick},
		})
		if err != nil {
			return service.Role{}, err
		}
		if p.Presence != nil {
			p.Presence.ReportLeader(s.Leading)
		}
		return service.Role{Run: s.Run}, nil
	})
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
