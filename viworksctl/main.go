// Command viworksctl is the operator's command line over the REST API (see
// package cli and docs/cli.md).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/viworks/backend-agent/pkg/buildinfo"
	"github.com/viworks/backend-agent/viworksctl/cli"
)

func main() {
	if buildinfo.PrintIfAsked(os.Stdout, "viworksctl", os.Args[1:]) {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
