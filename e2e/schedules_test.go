package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type scheduleView struct {
	ID          string `json:"id"`
	LastOutcome string `json:"last_outcome"`
	Paused      bool   `json:"paused"`
}

type runView struct {
	ID         string     `json:"id"`
	Status     string     `json:"status"`
	ScheduleID *string    `json:"schedule_id"`
	DueAt      *time.Time `json:"due_at"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// runsOf lists every command of schedule id (the schedule's runs), oldest
// due time first.
func (s system) runsOf(t *testing.T, verb, id string) []runView {
	t.Helper()
	var out []runView
	cursor := ""
	for {
		var page struct {
			Items      []runView `json:"items"`
			NextCursor *string   `json:"next_cursor"`
		}
		require.Equal(t, http.StatusOK, s.api.do(t, http.MethodGet, "/api/v1/commands?limit=1000&verb="+verb+"&cursor="+url.QueryEscape(cursor), nil, &page))
		for _, r := range page.Items {
			if r.ScheduleID != nil && *r.ScheduleID == id {
				out = append(out, r)
			}
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DueAt.Before(*out[j].DueAt) })
	return out
}

// TestSchedulesExactlyOnceAcrossSchedulerKill: two schedulers on Postgres
// fire a 1 s schedule for about 20 s; the first is killed with SIGKILL
// midway. Every due time from the first run to the last has exactly one
// command (counted), none is missing. Beside it, a 1 s schedule of a 3 s
// sleep with overlap skip never has two runs active at once, and one of a 3 s
// sleep every 2 s with cancel_previous has each run cancelled by the next.
func TestSchedulesExactlyOnceAcrossSchedulerKill(t *testing.T) {
	c := newCluster(t)
	sys := startSystem(t, c)
	port := freePort(t)
	second := c.start("scheduler-2", "scheduler", nil, "--port", strconv.Itoa(port))
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), second)
	c.start("agentsim", "agentsim", nil, "--gateway", sys.gateways[0], "--agents", "1", "--prefix", "sch-",
		"--enrollment-secret", sys.enrollKey)
	sys.waitOnline(t, 1)

	var tick, slow, replace scheduleView
	require.Equal(t, http.StatusCreated, sys.api.do(t, http.MethodPost, "/api/v1/schedules", map[string]any{
		"name": "tick", "interval_seconds": 1, "overlap": "allow", "verb": "echo", "args": map[string]any{"message": "tick"},
		"agent_targets": []string{"sch-0"},
	}, &tick))
	require.Equal(t, http.StatusCreated, sys.api.do(t, http.MethodPost, "/api/v1/schedules", map[string]any{
		"name": "slow", "interval_seconds": 1, "overlap": "skip", "verb": "sleep", "args": map[string]any{"seconds": 3},
		"agent_targets": []string{"sch-0"}, "timeout_seconds": 60,
	}, &slow))

	require.Equal(t, http.StatusCreated, sys.api.do(t, http.MethodPost, "/api/v1/schedules", map[string]any{
		"name": "replace", "interval_seconds": 2, "overlap": "cancel_previous", "verb": "sleep", "args": map[string]any{"seconds": 3},
		"agent_targets": []string{"sch-0"}, "timeout_seconds": 60,
	}, &replace))

	time.Sleep(10 * time.Second)
	var first *proc
	for _, p := range c.Procs() {
		if p.Name == "scheduler" {
			first = p
		}
	}
	require.NotNil(t, first)
	require.NoError(t, first.Cmd.Process.Signal(syscall.SIGKILL))
	<-first.Done
	time.Sleep(10 * time.Second)
	for _, id := range []string{tick.ID, slow.ID, replace.ID} {
		require.Equal(t, http.StatusOK, sys.api.do(t, http.MethodPost, "/api/v1/schedules/"+id+"/pause", nil, nil))
	}

	runs := sys.runsOf(t, "echo", tick.ID)
	require.GreaterOrEqual(t, len(runs), 15, "about 20 due times in 20 s")
	for i, r := range runs {
		require.Equal(t, runs[0].DueAt.Add(time.Duration(i)*time.Second), r.DueAt.UTC(), "run %d of %d: one command per due time, none missing", i, len(runs))
	}
	t.Logf("%d due times, %d commands, first scheduler killed after 10 s", len(runs), len(runs))
	last := sys.waitCommand(t, runs[len(runs)-1].ID, 30*time.Second, 100*time.Millisecond)
	require.Equal(t, "succeeded", last.Status, "runs are ordinary commands that reach the agent")

	slowRuns := sys.runsOf(t, "sleep", slow.ID)
	require.GreaterOrEqual(t, len(slowRuns), 3)
	require.Less(t, len(slowRuns), 10, "due times during a 3 s sleep were skipped")
	for i := 1; i < len(slowRuns); i++ {
		sys.waitCommand(t, slowRuns[i-1].ID, 30*time.Second, 100*time.Millisecond)
		var p runView
		require.Equal(t, http.StatusOK, sys.api.do(t, http.MethodGet, "/api/v1/commands/"+slowRuns[i-1].ID, nil, &p))
		require.NotNil(t, p.FinishedAt)
		require.False(t, slowRuns[i].CreatedAt.Before(*p.FinishedAt), "run %d started while run %d was active", i, i-1)
	}

	// cancel_previous: each 3 s sleep is cancelled by the run due 2 s later.
	replaced := sys.runsOf(t, "sleep", replace.ID)
	require.GreaterOrEqual(t, len(replaced), 5)
	for i, r := range replaced[:len(replaced)-1] {
		require.Equal(t, "cancelled", r.Status, "run %d was replaced by the next", i)
	}
}

// TestAllInOneSchedules: bin/viworks (SQLite) fires a 1 s schedule once per
// due time, and its runs reach the demo agent.
func TestAllInOneSchedules(t *testing.T) {
	c := embeddedCluster(t)
	_, cli := allInOne(t, c, "viworks", filepath.Join(t.TempDir(), "data"), "--demo-agents", "1")
	require.Eventually(t, func() bool { return len(agentsOf(t, cli, "online")) == 1 }, 30*time.Second, 50*time.Millisecond)
	sys := system{api: cli}
	var tick scheduleView
	require.Equal(t, http.StatusCreated, cli.do(t, http.MethodPost, "/api/v1/schedules", map[string]any{
		"name": "tick", "interval_seconds": 1, "overlap": "allow", "verb": "echo", "args": map[string]any{"message": "tick"},
		"agent_targets": []string{"sim-0"},
	}, &tick))
	time.Sleep(5 * time.Second)
	require.Equal(t, http.StatusOK, cli.do(t, http.MethodPost, "/api/v1/schedules/"+tick.ID+"/pause", nil, nil))
	runs := sys.runsOf(t, "echo", tick.ID)
	require.GreaterOrEqual(t, len(runs), 3)
	for i, r := range runs {
		require.Equal(t, runs[0].DueAt.Add(time.Duration(i)*time.Second), r.DueAt.UTC(), "run %d of %d", i, len(runs))
		require.Equal(t, "succeeded", sys.waitCommand(t, r.ID, 20*time.Second, 20*time.Millisecond).Status)
	}
}
