package cli

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/viworks/backend-agent/viworksctl/client"
	"github.com/viworks/backend-agent/viworksctl/config"
)

func (a *app) loginCmd() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "login --server URL",
		Short: "Log in to an installation with an API key (read from a prompt or stdin)",
		Long: `Log in to an installation: the API key is read from a prompt (on a terminal,
without echo) or from standard input, exchanged at POST /api/v1/auth/token, and
kept with the server in the context (--context, default "default") of the
configuration file, mode 0600. The context becomes the current one.`,
		Example: `  viworksctl login --server https://viworks.example.com
  echo "$API_KEY" | viworksctl login --server http://localhost:8080 --context laptop`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, f, name, err := a.load()
			if err != nil {
				return err
			}
			c := f.Contexts[name]
			if c == nil {
				c = &config.Context{}
			}
			if server == "" {
				server = a.io.Getenv("VIWORKS_SERVER")
			}
			if server == "" {
				server = c.Server
			}
			if server == "" {
				return usageErrorf("--server is required")
			}
			server = strings.TrimRight(server, "/")
			ex, err := client.New(nil, client.Config{Server: server})
			if err != nil {
				return withCode(ExitUsage, err)
			}
			if u, err := url.Parse(server); err == nil && u.Scheme == "http" && !loopback(u.Hostname()) {
				fmt.Fprintf(a.io.Err, "viworksctl: warning: %s is plain http: the API key and tokens cross the network unencrypted\n", server)
			}
			key, err := a.readKey()
			if err != nil {
				return err
			}
			t, err := ex.ExchangeAPIKey(cmd.Context(), key)
			if err != nil {
				return err
			}
			exp := t.ExpiresAt.UTC()
			c.Server, c.APIKey, c.Token, c.TokenExpiresAt = server, key, t.Token, &exp
			f.Contexts[name] = c
			f.CurrentContext = name
			if err := f.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Out, "logged in to %s (context %q, token valid until %s, saved in %s)\n", server, name, exp.Format(time.RFC3339), path)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "base URL of the API, such as http://localhost:8080 (default $VIWORKS_SERVER or the context's)")
	return cmd
}

// loopback reports whether host is localhost or a loopback address.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readKey reads the API key from a prompt or from the first line of stdin.
func (a *app) readKey() (string, error) {
	var key string
	if f, ok := a.io.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(a.io.Err, "API key: ")
		raw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.io.Err)
		if err != nil {
			return "", fmt.Errorf("reading the API key: %w", err)
		}
		key = string(raw)
	} else {
		line, err := bufio.NewReader(a.io.In).ReadString('\n')
		if err != nil && line == "" {
			return "", usageErrorf("no API key on standard input")
		}
		key = line
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return "", usageErrorf("the API key is empty")
	}
	return key, nil
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "logout",
		Short:   "Forget the API key and token of the current context (or --context)",
		Example: "  viworksctl logout\n  viworksctl logout --context staging",
		Args:    exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			path, f, name, err := a.load()
			if err != nil {
				return err
			}
			c, ok := f.Contexts[name]
			if !ok {
				return withCode(ExitNotFound, fmt.Errorf("no context %q in %s", name, path))
			}
			c.APIKey, c.Token, c.TokenExpiresAt = "", "", nil
			if err := f.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Out, "logged out of %s (context %q; its server is kept)\n", c.Server, name)
			return nil
		},
	}
}

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Contexts: the installations in the configuration file",
		Example: `  viworksctl config get-contexts
  viworksctl config use-context staging`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "use-context NAME",
		Short:   "Make NAME the current context",
		Example: "  viworksctl config use-context staging",
		Args:    exactArgs("NAME"),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			_, f, _, err := a.load()
			if err != nil {
				return nil, cobra.ShellCompDirectiveError
			}
			return f.Names(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(_ *cobra.Command, args []string) error {
			path, f, _, err := a.load()
			if err != nil {
				return err
			}
			if _, ok := f.Contexts[args[0]]; !ok {
				return withCode(ExitNotFound, fmt.Errorf("no context %q in %s (contexts: %s)", args[0], path, strings.Join(f.Names(), ", ")))
			}
			f.CurrentContext = args[0]
			if err := f.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Out, "current context: %s\n", args[0])
			return nil
		},
	}, &cobra.Command{
		Use:     "current-context",
		Short:   "Print the current context",
		Example: "  viworksctl config current-context",
		Args:    exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			_, _, name, err := a.load()
			if err != nil {
				return err
			}
			fmt.Fprintln(a.io.Out, name)
			return nil
		},
	}, &cobra.Command{
		Use:     "get-contexts",
		Aliases: []string{"ls"},
		Short:   "List the contexts",
		Example: "  viworksctl config get-contexts",
		Args:    exactArgs(),
		RunE: func(*cobra.Command, []string) error {
			_, f, current, err := a.load()
			if err != nil {
				return err
			}
			var rows [][]string
			for _, n := range f.Names() {
				c := f.Contexts[n]
				mark, exp := "", "-"
				if n == current {
					mark = "*"
				}
				if c.TokenExpiresAt != nil {
					exp = c.TokenExpiresAt.Format(time.RFC3339)
				}
				rows = append(rows, []string{mark, n, c.Server, fmt.Sprint(c.APIKey != ""), exp})
			}
			return a.printer().Table([]string{"CURRENT", "NAME", "SERVER", "LOGGED IN", "TOKEN EXPIRES"}, rows)
		},
	}, &cobra.Command{
		Use:     "delete-context NAME",
		Short:   "Remove a context with its key and token",
		Example: "  viworksctl config delete-context old",
		Args:    exactArgs("NAME"),
		RunE: func(_ *cobra.Command, args []string) error {
			path, f, _, err := a.load()
			if err != nil {
				return err
			}
			if _, ok := f.Contexts[args[0]]; !ok {
				return withCode(ExitNotFound, fmt.Errorf("no context %q in %s", args[0], path))
			}
			delete(f.Contexts, args[0])
			if f.CurrentContext == args[0] {
				f.CurrentContext = ""
			}
			if err := f.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Out, "deleted context %s\n", args[0])
			return nil
		},
	})
	return cmd
}
