// Command bench runs `make bench`: the product's speed on this machine, beside
// its targets and the limits of the same machine. BENCH_QUICK=1 runs it small.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/viworks/backend-agent/bench/runner"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bare-server" {
		// The api scenario's limit: a bare gin handler in its own process.
		if err := runner.ServeBare(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench bare-server: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var cfg runner.Config
	flag.StringVar(&cfg.Root, "root", ".", "repository root")
	flag.StringVar(&cfg.OutDir, "out", "bench/results", "directory for the result table and the latency chart")
	flag.BoolVar(&cfg.Quick, "quick", os.Getenv("BENCH_QUICK") == "1", "small sizes (also BENCH_QUICK=1)")
	flag.IntVar(&cfg.ConnAgents, "conn-agents", 0, "idle agents in the connections scenario (0: 19,000, or 500 when quick)")
	flag.IntVar(&cfg.FanOutOverride, "fanout-agents", 0, "agents of the fan-out command (0: 10,000, or 500 when quick)")
	flag.BoolVar(&cfg.Profile, "profile", os.Getenv("BENCH_PROFILE") == "1", "services serve pprof and CPU profiles of each measuring window are written next to the table (also BENCH_PROFILE=1)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runner.Run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}
