// Command viworks runs the whole product in one process (see package
// allinone); `viworks token` mints API tokens for its data directory.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/standalone/allinone"
)

const name = "viworks"

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "token" {
		return token(args[1:])
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var o allinone.Options
	fs.StringVar(&o.DataDir, "data-dir", "./data", "directory for the SQLite database and generated secrets")
	fs.StringVar(&o.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "Postgres URL instead of the embedded SQLite (default $DATABASE_URL)")
	fs.StringVar(&o.RedisURL, "redis-url", os.Getenv("REDIS_URL"), "Redis URL instead of the in-process bus (default $REDIS_URL)")
	fs.IntVar(&o.DemoAgents, "demo-agents", 0, "simulated agents to start in this process")
	cfg, err := service.LoadConfigWith(fs, args, func() (config.Config, error) { return allinone.BaseConfig(o.DataDir, true) })
	if err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := allinone.Run(ctx, cfg, o, os.Stdout); err != nil {
		service.PrintErrors(os.Stderr, name, err)
		return 1
	}
	return 0
}

func token(args []string) int {
	fs := flag.NewFlagSet(name+" token", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "data directory of the viworks instance")
	return service.Token(name+" token", fs, args, func() (config.Config, error) { return allinone.BaseConfig(*dataDir, false) })
}
