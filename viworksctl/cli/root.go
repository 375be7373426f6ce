// Package cli is viworksctl's command tree: cobra commands over the REST API,
// the configuration file's contexts, output formats and exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/viworks/backend-agent/viworksctl/client"
	"github.com/viworks/backend-agent/viworksctl/config"
	"github.com/viworks/backend-agent/viworksctl/output"
)

// Exit codes.
const (
	ExitOK       = 0 // success; with --wait: every target succeeded
	ExitFailed   = 1 // a command or target failed, a conflict, a failed check
	ExitUsage    = 2 // bad flags or arguments, or input the server refused (400, 413, 415, 422)
	ExitAuth     = 3 // not logged in, a refused API key or token (401, 403)
	ExitNotFound = 4 // the resource does not exist (404)
	ExitServer   = 5 // the server failed or is unreachable (5xx, 429, network)
)

const exitCodesHelp = `Exit codes:
  0  success (with --wait: every target succeeded)
  1  a command or one of its targets failed, a conflict (409), a failed check
  2  usage: bad flags or arguments, or input the server refused (400, 413, 415, 422)
  3  authentication or permission: not logged in, key or token refused (401, 403)
  4  not found (404)
  5  server or network: 5xx, 429, no answer`

const envHelp = `Environment:
  VIWORKS_SERVER   server URL, overrides the context's (another server gets none of its credentials)
  VIWORKS_TOKEN    bearer token to use as is, overrides the context's API key and token
  XDG_CONFIG_HOME  the configuration is $XDG_CONFIG_HOME/viworks/config.toml
                   (default ~/.config/viworks/config.toml; --config names another)
  NO_COLOR         no colour, as --no-color`

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &exitError{code: code, err: err} }

func usageErrorf(format string, args ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, args...))
}

// ExitCode is the exit code err calls for.
func ExitCode(err error) int {
	var ee *exitError
	var ae *client.APIError
	var ne *client.NetworkError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ae):
		switch {
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
			return ExitAuth
		case ae.Status == http.StatusNotFound:
			return ExitNotFound
		case ae.Status == http.StatusConflict:
			return ExitFailed
		case ae.Status == http.StatusTooManyRequests || ae.Status >= 500:
			return ExitServer
		default:
			return ExitUsage
		}
	case errors.As(err, &ne):
		return ExitServer
	case errors.Is(err, context.Canceled):
		return ExitFailed
	}
	// cobra's own errors: unknown commands and flags, argument counts.
	return ExitUsage
}

// IO is where the program reads and writes; Getenv its environment.
type IO struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	Getenv func(string) string
}

// app is the state shared by the commands of one run.
type app struct {
	io          IO
	configPath  string
	contextName string
	format      string
	noColor     bool
}

// Main runs viworksctl with args and returns its exit code.
func Main(ctx context.Context, args []string, stdio IO) int {
	if stdio.Getenv == nil {
		stdio.Getenv = os.Getenv
	}
	a := &app{io: stdio}
	root := a.root()
	root.SetArgs(args)
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitCode(err)
	var ee *exitError
	if !errors.As(err, &ee) || ee.err.Error() != "" {
		fmt.Fprintf(stdio.Err, "viworksctl: %s\n", err)
	}
	if code == ExitUsage && !isAPIError(err) {
		fmt.Fprintln(stdio.Err, "Run 'viworksctl --help' for usage.")
	}
	return code
}

func isAPIError(err error) bool {
	var ae *client.APIError
	return errors.As(err, &ae)
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "viworksctl",
		Short: "Operate a ViWorkS fleet from the command line, over the REST API",
		Long: `viworksctl operates a ViWorkS installation (bin/viworks, a VM install or the
Helm install) through its REST API: agents, commands, alerts, the audit trail,
API keys and enrollment secrets.

Log in once with an API key; the key and the server are kept in the
configuration file (mode 0600), and the short-lived token exchanged for the key
is refreshed before it expires.

` + envHelp + `

` + exitCodesHelp,
		Example: `  echo "$API_KEY" | viworksctl login --server http://localhost:8080
  viworksctl agents ls --status online
  viworksctl commands send echo --arg message=hi --target sim-0 --wait
  viworksctl commands ls -o json | jq '.items[].status'`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return (&output.Printer{Format: a.format}).Validate()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(ExitUsage, err) })
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "configuration file (default $XDG_CONFIG_HOME/viworks/config.toml or ~/.config/viworks/config.toml)")
	pf.StringVar(&a.contextName, "context", "", "context (installation) to use instead of the current one")
	pf.StringVarP(&a.format, "output", "o", "table", "output format of reads: table, json (the API's document unchanged) or yaml")
	pf.BoolVar(&a.noColor, "no-color", false, "no colour in tables and progress")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(output.Formats, cobra.ShellCompDirectiveNoFileComp))
	root.AddGroup(&cobra.Group{ID: "fleet", Title: "Fleet:"}, &cobra.Group{ID: "admin", Title: "Administration:"}, &cobra.Group{ID: "setup", Title: "Set-up:"})
	for _, c := range []*cobra.Command{a.loginCmd(), a.logoutCmd(), a.configCmd()} {
		c.GroupID = "setup"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.agentsCmd(), a.commandsCmd(), a.templatesCmd(), a.schedulesCmd(), a.statusCmd(), a.alertsCmd()} {
		c.GroupID = "fleet"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.auditCmd(), a.alertRulesCmd(), a.webhooksCmd(), a.apiKeysCmd(), a.enrollmentSecretsCmd()} {
		c.GroupID = "admin"
		root.AddCommand(c)
	}
	root.SetHelpCommandGroupID("setup")
	root.SetCompletionCommandGroupID("setup")
	return root
}

// printer writes the chosen format to standard output.
func (a *app) printer() *output.Printer {
	p := &output.Printer{W: a.io.Out, Format: a.format}
	tty := false
	if f, ok := a.io.Out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
		if w, _, err := term.GetSize(int(f.Fd())); err == nil {
			p.Width = w
		}
	}
	if p.Width == 0 {
		if n, err := strconv.Atoi(a.io.Getenv("COLUMNS")); err == nil && n > 0 {
			p.Width = n
		}
	}
	p.Color = tty && !a.noColor && a.io.Getenv("NO_COLOR") == ""
	return p
}

// stderrTTY reports whether standard error is a terminal (for the progress line).
func (a *app) stderrTTY() bool {
	f, ok := a.io.Err.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// path of the configuration file.
func (a *app) path() (string, error) {
	if a.configPath != "" {
		return a.configPath, nil
	}
	return config.DefaultPath()
}

// exactArgs is cobra.ExactArgs with a usage exit code and the names of the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(names) == 0 && len(args) > 0:
			return usageErrorf("takes no arguments, got %q", args[0])
		case len(args) != len(names):
			return usageErrorf("want %d argument(s) (%s), got %d", len(names), strings.Join(names, " "), len(args))
		}
		for i, v := range args {
			if strings.TrimSpace(v) == "" {
				return usageErrorf("%s must not be empty", names[i])
			}
		}
		return nil
	}
}
