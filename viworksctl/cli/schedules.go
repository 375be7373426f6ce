package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/viworks/backend-agent/viworksctl/client"
	"github.com/viworks/backend-agent/viworksctl/output"
)

// readDocument reads a JSON object from file ("-": standard input).
func (a *app) readDocument(file string) (map[string]any, error) {
	var raw []byte
	var err error
	if file == "-" {
		raw, err = io.ReadAll(io.LimitReader(a.io.In, 1<<20))
	} else {
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, usageErrorf("--file %s: %v", file, err)
	}
	doc := map[string]any{}
	if err := json.Unmarshal(raw, &doc); err != nil || doc == nil {
		return nil, usageErrorf("--file %s: want a JSON object", file)
	}
	return doc, nil
}

func (a *app) templatesCmd() *cobra.Command {
	var file string
	create := &cobra.Command{
		Use:   "create --file FILE",
		Short: "Save a template from a JSON document (a new version when the name exists)",
		Long: `Save a template: the document of POST /api/v1/templates, with name, verb,
args ({{param}} placeholders in string values), parameters and the default
targeting and options. Saving an existing name makes a new version.`,
		Example: `  viworksctl templates create --file restart.json
  echo '{"name":"hello","verb":"echo","args":{"message":"hi {{who}}"},"parameters":{"who":{"type":"string","required":true}}}' | viworksctl templates create --file -`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			doc, err := a.readDocument(file)
			if err != nil {
				return err
			}
			return a.post(cmd, "/api/v1/templates", doc, "name", "version", "verb", "description", "created_by", "created_at")
		},
	}
	create.Flags().StringVarP(&file, "file", "f", "", "the template document (JSON; - for standard input)")
	_ = create.MarkFlagRequired("file")
	var version int
	get := &cobra.Command{
		Use:     "get NAME [--version N]",
		Short:   "A template: its latest version, or --version N",
		Example: "  viworksctl templates get restart\n  viworksctl templates get restart --version 2 -o json",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/api/v1/templates/" + pathID(args[0])
			if version > 0 {
				path += "/versions/" + strconv.Itoa(version)
			}
			return a.getOne(cmd, path, nil, templateTable)
		},
	}
	get.Flags().IntVar(&version, "version", 0, "a version of the template (default the latest)")
	versions := &cobra.Command{
		Use:     "versions NAME",
		Short:   "Every version of a template, newest first",
		Example: "  viworksctl templates versions restart",
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := a.call(cmd, client.Request{Method: http.MethodGet, Path: "/api/v1/templates/" + pathID(args[0]) + "/versions"})
			if err != nil {
				return err
			}
			return a.show(resp.Body, func(p *output.Printer, doc map[string]any) error {
				items, _ := doc["items"].([]any)
				return rows(p, items, templateCols)
			})
		},
	}
	return a.crudCmd(crud{
		use: "templates", short: "Named, versioned command definitions (admin writes, viewer reads)", path: "/api/v1/templates", remove: "retire",
		create: create, extra: []*cobra.Command{get, versions},
		example: "  viworksctl templates ls\n  viworksctl commands send --template restart --param service=nginx --target web-1 --wait",
		cols:    templateCols,
	})
}

var templateCols = []column{col("NAME", "name"), col("VERSION", "version"), col("VERB", "verb"), col("DESCRIPTION", "description"),
	col("CREATED BY", "created_by"), col("CREATED", "created_at")}

// templateTable shows a template and its parameters.
func templateTable(p *output.Printer, doc map[string]any) error {
	if err := fields(p, doc, "name", "version", "verb", "description", "args", "defaults", "created_by", "created_at"); err != nil {
		return err
	}
	params, _ := doc["parameters"].(map[string]any)
	if len(params) == 0 {
		return nil
	}
	items := make([]any, 0, len(params))
	for name, def := range params {
		m, _ := def.(map[string]any)
		if m == nil {
			continue
		}
		m["name"] = name
		items = append(items, m)
	}
	fmt.Fprintln(p.W)
	return rows(p, items, []column{col("PARAMETER", "name"), col("TYPE", "type"), col("REQUIRED", "required"), col("DEFAULT", "default"),
		col("SECRET", "secret"), col("PATTERN", "pattern"), col("VALUES", "values")})
}

func (a *app) schedulesCmd() *cobra.Command {
	var tg targeting
	var run runWhat
	var name, cron, tz, verb, overlap, catchUp, priority string
	var every, jitter time.Duration
	create := &cobra.Command{
		Use:   "create --name N (--cron EXPR [--timezone Z] | --every D) (--template T [--param k=v …] | --verb V [--arg k=v …]) (--target ID … | --selector …)",
		Short: "Run a command on a timetable; each due time runs once across schedulers",
		Long: `Create a schedule: every due time of a cron expression in a time zone
(--cron, --timezone; default UTC) or of a fixed interval (--every, at least
1s) runs one ordinary command: a template's (--template, --param) or an
inline one (--verb, --arg), with the targets and options of commands send.
--overlap says what a due time does while the previous run is still active
(skip, allow, cancel_previous); --catch-up what happens to due times missed
while no scheduler ran (skip, or once for the latest).`,
		Example: `  viworksctl schedules create --name nightly-restart --cron "0 3 * * *" --timezone Europe/Paris --template restart --param service=nginx --selector site=paris
  viworksctl schedules create --name ping --every 30s --verb echo --arg message=ping --target sim-0 --overlap skip`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := map[string]any{"name": name}
			f := cmd.Flags()
			switch {
			case cron != "" && f.Changed("every"):
				return usageErrorf("--cron or --every, not both")
			case cron != "":
				req["cron"] = cron
				if tz != "" {
					req["timezone"] = tz
				}
			case f.Changed("every"):
				s, err := seconds("every", every)
				if err != nil {
					return err
				}
				req["interval_seconds"] = s
			default:
				return usageErrorf("give the timetable: --cron EXPR or --every D")
			}
			if err := run.body(req, verb); err != nil {
				return err
			}
			if run.template == "" || tg.given() {
				if err := tg.body(req); err != nil {
					return err
				}
			}
			if f.Changed("jitter") {
				if jitter%time.Second != 0 || jitter < 0 {
					return usageErrorf("--jitter %s: want whole seconds", jitter)
				}
				req["jitter_seconds"] = int(jitter / time.Second)
			}
			for k, v := range map[string]string{"overlap": overlap, "catch_up": catchUp, "priority": priority} {
				if v != "" {
					req[k] = v
				}
			}
			resp, err := a.call(cmd, client.Request{Method: http.MethodPost, Path: "/api/v1/schedules", Body: req})
			if err != nil {
				return err
			}
			return a.show(resp.Body, scheduleTable)
		},
	}
	tg.add(create)
	f := create.Flags()
	f.StringVar(&name, "name", "", "the schedule's name")
	f.StringVar(&cron, "cron", "", `cron expression: five fields (minute hour day month weekday) or @daily, @hourly, …`)
	f.StringVar(&tz, "timezone", "", "IANA time zone of --cron, such as Europe/Paris (default UTC)")
	f.DurationVar(&every, "every", 0, "a fixed interval in place of --cron, such as 30s or 1h")
	f.DurationVar(&jitter, "jitter", 0, "each run fires up to this much after its due time, such as 30s")
	run.add(create)
	f.StringVar(&verb, "verb", "", "the verb of each run, in place of --template")
	f.StringVar(&overlap, "overlap", "", "while the previous run is active: skip (default), allow or cancel_previous")
	f.StringVar(&catchUp, "catch-up", "", "due times missed while no scheduler ran: skip (default) or once")
	f.StringVar(&priority, "priority", "", "low, normal, high or critical")
	_ = create.MarkFlagRequired("name")
	_ = create.RegisterFlagCompletionFunc("overlap", cobra.FixedCompletions([]string{"skip", "allow", "cancel_previous"}, cobra.ShellCompDirectiveNoFileComp))
	_ = create.RegisterFlagCompletionFunc("catch-up", cobra.FixedCompletions([]string{"skip", "once"}, cobra.ShellCompDirectiveNoFileComp))
	get := &cobra.Command{
		Use:     "get ID",
		Short:   "A schedule with its next run and its last runs",
		Example: "  viworksctl schedules get 1f2e…\n  viworksctl schedules get 1f2e… -o json | jq .runs",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.getOne(cmd, "/api/v1/schedules/"+pathID(args[0]), nil, scheduleTable)
		},
	}
	toggle := func(verb, short string) *cobra.Command {
		return &cobra.Command{
			Use:     verb + " ID",
			Short:   short,
			Example: fmt.Sprintf("  viworksctl schedules %s 1f2e…", verb),
			Args:    exactArgs("ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return a.mutate(cmd, client.Request{Method: http.MethodPost, Path: "/api/v1/schedules/" + pathID(args[0]) + "/" + verb}, verb+"d "+args[0], scheduleTable)
			},
		}
	}
	return a.crudCmd(crud{
		use: "schedules", short: "Commands on a timetable (operator)", path: "/api/v1/schedules", remove: "delete",
		create: create, extra: []*cobra.Command{get, toggle("pause", "Pause a schedule: no run until it is resumed"), toggle("resume", "Resume a paused schedule")},
		example: "  viworksctl schedules ls\n  viworksctl schedules create --name ping --every 1m --verb echo --arg message=ping --target sim-0",
		cols: []column{col("ID", "id"), col("NAME", "name"), {"TIMETABLE", func(_ *output.Printer, m map[string]any) string { return timetable(m) }},
			{"COMMAND", func(_ *output.Printer, m map[string]any) string { return runsWhat(m) }}, col("PAUSED", "paused"),
			col("NEXT RUN", "next_run_at"), col("LAST RUN", "last_run_at"), statusCol("LAST OUTCOME", "last_outcome")},
	})
}

// timetable shows a schedule's cron expression and zone, or its interval.
func timetable(m map[string]any) string {
	if c, _ := m["cron"].(string); c != "" {
		tz, _ := m["timezone"].(string)
		return strings.TrimSpace(c + " " + tz)
	}
	if n, err := strconv.Atoi(fmt.Sprint(m["interval_seconds"])); err == nil && n > 0 {
		return "every " + (time.Duration(n) * time.Second).String()
	}
	return "-"
}

// runsWhat shows what each run of a schedule is: a template or a verb.
func runsWhat(m map[string]any) string {
	if t, _ := m["template"].(string); t != "" {
		return "template " + t
	}
	return str(lookup(m, "command.verb"))
}

// scheduleTable shows a schedule and its last runs.
func scheduleTable(p *output.Printer, doc map[string]any) error {
	doc["timetable"], doc["runs_what"] = timetable(doc), runsWhat(doc)
	if err := fields(p, doc, "id", "name", "timetable", "runs_what", "overlap", "catch_up", "paused", "next_run_at", "last_run_at",
		"last_outcome", "created_by", "created_at"); err != nil {
		return err
	}
	runs, _ := doc["runs"].([]any)
	if len(runs) == 0 {
		return nil
	}
	fmt.Fprintln(p.W)
	return rows(p, runs, []column{col("DUE", "due_at"), col("COMMAND", "command_id"), statusCol("STATUS", "status"), col("FINISHED", "finished_at")})
}
