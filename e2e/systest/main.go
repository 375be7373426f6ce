// Command systest is the multi-pod system test behind `make e2e`: real nginx
// as the ingress in front of two api-servers and three agent-gateways, two
// schedulers, private Postgres and Redis, and a simulated fleet connecting
// through nginx; it runs the fault scenarios of issue 7 and prints one table.
// E2E_QUICK=1 (or --quick) runs a smaller fleet and workload, as CI does.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// options size the run.
type options struct {
	bin          string        // prebuilt binaries (make build); "" builds them
	root         string        // repository root, for building
	quick        bool          // the CI variant
	agents       int           // simulated agents
	simProcs     int           // agentsim processes they are spread over
	executions   int           // executions per scenario
	perCommand   int           // target agents per command
	window       time.Duration // commands are submitted evenly over this window
	sleepSeconds float64       // the sleep verb's duration (half the commands)
	faultAt      time.Duration // when the fault hits, from the first submission
	outage       time.Duration // how long Postgres stays down
	settle       time.Duration // how long a scenario may take to finish after the last submission
	only         string        // run only scenarios whose name contains this
	keep         bool          // keep the work directory (logs) after the run
}

func defaults(quick bool) options {
	o := options{
		bin: "bin", root: ".", quick: quick,
		agents: 1000, simProcs: 4, executions: 5000, perCommand: 20,
		window: 20 * time.Second, sleepSeconds: 2, faultAt: 7 * time.Second,
		outage: 8 * time.Second, settle: 3 * time.Minute,
	}
	if quick {
		o.agents, o.executions, o.perCommand = 200, 1000, 10
		o.window, o.sleepSeconds, o.faultAt, o.outage = 10*time.Second, 1, 4*time.Second, 5*time.Second
		o.settle = 2 * time.Minute
	}
	return o
}

func main() {
	quick := os.Getenv("E2E_QUICK") == "1"
	for _, a := range os.Args[1:] {
		if a == "--quick" || a == "-quick" || a == "--quick=true" {
			quick = true
		}
	}
	o := defaults(quick)
	fs := flag.NewFlagSet("systest", flag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", o.quick, "the CI variant: 200 agents, 1,000 executions per scenario (also E2E_QUICK=1)")
	fs.StringVar(&o.bin, "bin", o.bin, "directory of the prebuilt binaries (make build); empty: build them into a temporary directory")
	fs.StringVar(&o.root, "root", o.root, "repository root (for building)")
	fs.IntVar(&o.agents, "agents", o.agents, "simulated agents")
	fs.IntVar(&o.simProcs, "sim-procs", o.simProcs, "agentsim processes the agents are spread over")
	fs.IntVar(&o.executions, "executions", o.executions, "executions per scenario")
	fs.IntVar(&o.perCommand, "per-command", o.perCommand, "target agents per command")
	fs.DurationVar(&o.window, "window", o.window, "submission window of each scenario")
	fs.StringVar(&o.only, "only", "", "run only the scenarios whose name contains this")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory with every log")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "systest: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, o, os.Stdout))
}

func (o options) validate() error {
	var bad []string
	if o.agents < 10 || o.agents > 10000 {
		bad = append(bad, "--agents must be 10..10000")
	}
	if o.simProcs < 1 || o.simProcs > o.agents {
		bad = append(bad, "--sim-procs must be 1..agents")
	}
	if o.perCommand < 1 || o.perCommand > o.agents {
		bad = append(bad, "--per-command must be 1..agents")
	}
	if o.executions < o.perCommand || o.executions > 100000 {
		bad = append(bad, "--executions must be per-command..100000")
	}
	if o.window < time.Second {
		bad = append(bad, "--window must be at least 1s")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

// run brings the system up, runs the scenarios and prints the table; it
// returns the exit code.
func run(ctx context.Context, o options, out io.Writer) int {
	began := time.Now()
	logf := func(format string, a ...any) {
		fmt.Fprintf(out, "[%6.1fs] "+format+"\n", append([]any{time.Since(began).Seconds()}, a...)...)
	}
	variant := "full"
	if o.quick {
		variant = "quick"
	}
	logf("system test (%s): %d agents over %d agentsim processes, %d executions per scenario, %d agents per command",
		variant, o.agents, o.simProcs, o.executions, o.perCommand)
	s, err := startSystem(ctx, o, logf)
	if s != nil {
		defer s.close(logf)
	}
	if err != nil {
		logf("FAIL: bringing the system up: %v", err)
		return 1
	}
	var results []*result
	for i, sc := range scenarios() {
		if o.only != "" && !strings.Contains(sc.name, o.only) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		name := fmt.Sprintf("%d %s", i+1, sc.name)
		logf("scenario %s: %s", name, sc.what)
		r := s.runScenario(ctx, i, name, sc, logf)
		logf("scenario %s: %s", name, r.verdict())
		results = append(results, r)
	}
	logf("all scenarios done in %s", time.Since(began).Round(time.Second))
	writeTable(out, results)
	if s.ngx != nil {
		fmt.Fprintf(out, "\nthrough nginx: %d enrollments (POST /agent/v1/enroll → 201), %d WebSocket upgrades (/ws/agent → 101)\n",
			s.ngx.accessStats("/agent/v1/enroll", 201), s.ngx.accessStats("/ws/agent", 101))
	}
	failed := len(results) == 0
	for _, r := range results {
		if !r.ok() {
			failed = true
		}
	}
	if failed {
		fmt.Fprintln(out, "\nsystem test FAILED")
		return 1
	}
	fmt.Fprintln(out, "\nsystem test passed")
	return 0
}

func writeTable(out io.Writer, results []*result) {
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\texecutions\tcompleted\tlost\tduplicates\tfailed\tmax reconnect s\tresult")
	for _, r := range results {
		rec := "-"
		if r.maxReconnect >= 0 {
			rec = fmt.Sprintf("%.1f", r.maxReconnect.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", r.name, r.executions, r.completed, r.lost, r.duplicates, r.failed, rec, r.verdict())
	}
	_ = tw.Flush()
	for _, r := range results {
		for _, n := range r.notes {
			fmt.Fprintf(out, "  %s: %s\n", r.name, n)
		}
		for _, p := range r.problems {
			fmt.Fprintf(out, "  %s: PROBLEM: %s\n", r.name, p)
		}
	}
}
