package dispatch_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/scheduler/dispatch"
)

// Two schedulers on one Postgres fire a 1 s schedule: every due time gets
// exactly one command, none is missing, and the runs reach the agent.
func TestTwoSchedulersFireEachDueTimeOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	deliveries := gateway(t, e, "gw1", "a1")
	spec := store.CommandSpec{Verb: "echo", Args: json.RawMessage(`{"message":"tick"}`), Priority: store.PriorityNormal,
		TimeoutSeconds: 60, TTLSeconds: 3600, Targeting: store.Targeting{AgentIDs: []string{"a1"}}}
	raw, err := json.Marshal(spec)
	require.NoError(t, err)
	sc, err := e.store.CreateSchedule(ctx, store.Schedule{Name: "tick", IntervalSeconds: 1, Overlap: store.OverlapAllow, Command: raw, CreatedBy: "op"},
		store.AuditEvent{Actor: "op", Action: "schedule.create"})
	require.NoError(t, err)

	cfg := dispatch.Config{ScheduleTick: 20 * time.Millisecond}
	_, stop1 := start(t, e, cfg)
	_, stop2 := start(t, e, cfg)
	time.Sleep(3500 * time.Millisecond)
	stop1()
	stop2()

	_, runs, err := e.store.GetSchedule(ctx, sc.ID)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(runs), 2)
	require.Less(t, len(runs), store.LastRuns)
	slices.Reverse(runs)
	for i, c := range runs {
		require.Equal(t, sc.NextRunAt.Add(time.Duration(i)*time.Second), c.DueAt.UTC(), "run %d: one command per due time, none missing", i)
	}
	// Runs created just before the stop are dispatched by the next scheduler.
	_, err = e.store.SetSchedulePaused(ctx, sc.ID, true, store.AuditEvent{Actor: "op", Action: "schedule.pause"})
	require.NoError(t, err)
	start(t, e, cfg)
	seen := map[string]bool{}
	for range runs {
		_, d := next(t, deliveries)
		seen[d.ExecutionID] = true
	}
	require.Len(t, seen, len(runs), "every run was dispatched")
}
