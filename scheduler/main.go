// Command scheduler dispatches executions (see package scheduler); `scheduler
// migrate` applies the database schema and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/viworks/backend-agent/pkg/buildinfo"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/scheduler/dispatch"
)

const (
	name = "scheduler"
	port = 8082
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if buildinfo.PrintIfAsked(os.Stdout, name, args) {
		return 0
	}
	if len(args) > 0 && args[0] == "migrate" {
		return migrate(args[1:])
	}
	return service.Main(name, port, args, func(p *service.Process) (service.Role, error) {
		s, err := dispatch.NewFromProcess(p)
		if err != nil {
			return service.Role{}, err
		}
		return service.Role{Run: s.Run}, nil
	})
}

func migrate(args []string) int {
	fs := flag.NewFlagSet(name+" migrate", flag.ContinueOnError)
	cfg, err := service.LoadConfig(fs, args, port)
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
	defer func() { _ = st.Close() }()
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
