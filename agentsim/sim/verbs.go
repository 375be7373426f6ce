// Package sim is the agent simulator: simulated verbs and telemetry, and a
// fleet of agents that connect to a gateway through the agent SDK, exactly as
// real OS agents do.
package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/protocol"
)

// Verbs the simulated agents understand.
const (
	VerbEcho            = "echo"
	VerbSleep           = "sleep"
	VerbFail            = "fail"
	VerbCreatePanelUser = "create_panel_user"
)

// MaxSleepSeconds bounds the sleep verb.
const MaxSleepSeconds = 3600

// ExitCodeBadArgs is the exit code of a command whose arguments are invalid.
const ExitCodeBadArgs = 2

var usernameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`)

// Handlers returns the simulated verbs keyed by name.
func Handlers() map[string]agentsdk.HandlerFunc {
	return map[string]agentsdk.HandlerFunc{
		VerbEcho:            Echo,
		VerbSleep:           Sleep,
		VerbFail:            Fail,
		VerbCreatePanelUser: CreatePanelUser,
	}
}

// Echo answers args.message as its output; without a message the output is empty.
func Echo(_ context.Context, cmd protocol.Command) agentsdk.Result {
	a, err := parseArgs(cmd.Args)
	if err != nil {
		return badArgs(err)
	}
	msg, _, err := a.str("message")
	if err != nil {
		return badArgs(err)
	}
	return agentsdk.Result{Output: msg}
}

// Sleep waits args.seconds (0..3600, fractions allowed) or until cancelled.
func Sleep(ctx context.Context, cmd protocol.Command) agentsdk.Result {
	a, err := parseArgs(cmd.Args)
	if err != nil {
		return badArgs(err)
	}
	secs, ok, err := a.num("seconds")
	switch {
	case err != nil:
		return badArgs(err)
	case !ok:
		return badArgs(fmt.Errorf("seconds is required"))
	case secs < 0 || secs > MaxSleepSeconds:
		return badArgs(fmt.Errorf("seconds must be between 0 and %d", MaxSleepSeconds))
	}
	d := time.Duration(secs * float64(time.Second))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return agentsdk.Result{Output: fmt.Sprintf("slept %s", d)}
	case <-ctx.Done():
		return agentsdk.Result{ExitCode: agentsdk.ExitCodeCancelled, Error: "sleep interrupted: " + context.Cause(ctx).Error()}
	}
}

// Fail always fails with exit code 1 and args.message as the error.
func Fail(_ context.Context, cmd protocol.Command) agentsdk.Result {
	a, err := parseArgs(cmd.Args)
	if err != nil {
		return badArgs(err)
	}
	msg, _, err := a.str("message")
	if err != nil {
		return badArgs(err)
	}
	if msg == "" {
		msg = "simulated failure"
	}
	return agentsdk.Result{ExitCode: 1, Error: msg}
}

// CreatePanelUser simulates creating a panel user: args.username is required
// (1..64 of letters, digits, '.', '_', '-'), args.password optional. The output
// names the user and never contains the password.
func CreatePanelUser(_ context.Context, cmd protocol.Command) agentsdk.Result {
	a, err := parseArgs(cmd.Args)
	if err != nil {
		return badArgs(err)
	}
	user, ok, err := a.str("username")
	switch {
	case err != nil:
		return badArgs(err)
	case !ok || user == "":
		return badArgs(fmt.Errorf("username is required"))
	case !usernameRE.MatchString(user):
		return badArgs(fmt.Errorf("username must be 1..64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"))
	}
	if _, _, err := a.str("password"); err != nil {
		return badArgs(err)
	}
	return agentsdk.Result{Output: "created panel user " + user}
}

func badArgs(err error) agentsdk.Result {
	return agentsdk.Result{ExitCode: ExitCodeBadArgs, Error: "invalid args: " + err.Error()}
}

// args is a command's argument object; absent or null args are an empty object.
type args map[string]json.RawMessage

func parseArgs(raw json.RawMessage) (args, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return args{}, nil
	}
	var a args
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("must be a JSON object")
	}
	return a, nil
}

// str returns the string field name; ok is false when it is absent or null.
func (a args) str(name string) (v string, ok bool, err error) {
	raw, present := a[name]
	if !present || string(raw) == "null" {
		return "", false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false, fmt.Errorf("%s must be a string", name)
	}
	return v, true, nil
}

// num returns the number field name; ok is false when it is absent or null.
func (a args) num(name string) (v float64, ok bool, err error) {
	raw, present := a[name]
	if !present || string(raw) == "null" {
		return 0, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, fmt.Errorf("%s must be a number", name)
	}
	return v, true, nil
}
