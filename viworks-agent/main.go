// Command viworks-agent is the ViWorkS agent for Linux hosts:
//
//	viworks-agent --config /etc/viworks-agent/agent.toml [--enroll-secret-file FILE]
//
// It enrolls once with an enrollment secret, keeps its credential, replay
// window and unacknowledged results in state_dir, reports host telemetry and
// runs the verbs its configuration enables. It runs until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/viworks/backend-agent/pkg/buildinfo"
	"github.com/viworks/backend-agent/pkg/logging"
	"github.com/viworks/backend-agent/viworks-agent/config"
	"github.com/viworks/backend-agent/viworks-agent/daemon"
)

// version is the stamp of the build (pkg/buildinfo), reported to the gateway.
var version = buildinfo.Version

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("viworks-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/viworks-agent/agent.toml", "the configuration file (TOML)")
	secretFile := fs.String("enroll-secret-file", "", "file holding the enrollment secret (instead of the configuration's)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildinfo.String("viworks-agent"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "viworks-agent: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := config.Load(*path)
	if err == nil && *secretFile != "" {
		cfg.EnrollmentSecret, cfg.EnrollmentSecretFile = "", *secretFile
	}
	if err != nil {
		fmt.Fprintf(stderr, "viworks-agent: %v\n", err)
		return 2
	}
	log, err := logging.New(logging.Options{Level: cfg.Log.Level, Format: cfg.Log.Format, Output: "stderr"})
	if err != nil {
		fmt.Fprintf(stderr, "viworks-agent: %v\n", err)
		return 2
	}
	entry := log.WithField("component", "viworks-agent")
	agent, err := daemon.New(cfg, version, entry)
	if err != nil {
		fmt.Fprintf(stderr, "viworks-agent: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	entry.WithFields(map[string]any{"agent_id": cfg.AgentID, "gateway": cfg.Gateway, "verbs": cfg.Verbs, "version": version}).Info("agent starting")
	if err := agent.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "viworks-agent: %v\n", err)
		return 1
	}
	entry.Info("agent stopped")
	return 0
}
