// Command viworks runs the whole product in one process (see package
// allinone); `viworks token` mints API tokens for its data directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/viworks/backend-agent/pkg/buildinfo"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/standalone/allinone"
)

const name = "viworks"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run is the command line: it returns the exit code (0 for help, 2 for a
// usage error).
func run(args []string, stdout, stderr io.Writer) int {
	if buildinfo.PrintIfAsked(stdout, name, args) {
		return 0
	}
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "token":
			return token(args[1:])
		case a == "help" || a == "-h" || a == "-help" || a == "--help":
			usage(stdout)
			return 0
		case !strings.HasPrefix(a, "-"):
			fmt.Fprintf(stderr, "%s: unknown command %q\n", name, a)
			usage(stderr)
			return 2
		}
	}
	var o allinone.Options
	fs := serverFlags(&o)
	fs.SetOutput(io.Discard) // usage errors are printed below, once
	cfg, err := service.LoadConfigWith(fs, args, func() (config.Config, error) { return allinone.BaseConfig(o.DataDir, true) })
	switch {
	case errors.Is(err, flag.ErrHelp):
		usage(stdout)
		return 0
	case err != nil:
		service.PrintErrors(stderr, name, err)
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := allinone.Run(ctx, cfg, o, os.Stdout); err != nil {
		service.PrintErrors(stderr, name, err)
		return 1
	}
	return 0
}

// serverFlags are the flags of `viworks` itself (the configuration's flags
// are added by service.LoadConfigWith).
func serverFlags(o *allinone.Options) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&o.DataDir, "data-dir", "./data", "directory for the SQLite database and generated secrets")
	fs.StringVar(&o.DatabaseURL, "database-url", os.Getenv("DATABASE_URL"), "Postgres URL instead of the embedded SQLite (default $DATABASE_URL)")
	fs.StringVar(&o.RedisURL, "redis-url", os.Getenv("REDIS_URL"), "Redis URL instead of the in-process bus (default $REDIS_URL)")
	fs.IntVar(&o.DemoAgents, "demo-agents", 0, "simulated agents to start in this process")
	return fs
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `usage:
  %[1]s [flags]          run the whole product in one process
  %[1]s token [flags]    mint an API token for a data directory (%[1]s token -h: its flags)
  %[1]s help             print this text

flags:
`, name)
	fs := serverFlags(&allinone.Options{})
	config.AddFlags(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func token(args []string) int {
	fs := flag.NewFlagSet(name+" token", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "data directory of the viworks instance")
	return service.Token(name+" token", fs, args, func() (config.Config, error) { return allinone.BaseConfig(*dataDir, false) })
}
