package storetest

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/timetable"
)

// everySecond is a schedule of an echo on agent a1, every second.
func everySecond(t *testing.T, s *store.Store, mutate func(*store.Schedule)) store.Schedule {
	t.Helper()
	spec := store.SpecOf(newCmd("echo", store.Targeting{AgentIDs: []string{"a1"}}))
	spec.Args = json.RawMessage(`{"message":"tick"}`)
	raw, err := json.Marshal(spec)
	require.NoError(t, err)
	sc := store.Schedule{Name: "tick", IntervalSeconds: 1, Command: raw, CreatedBy: "op"}
	if mutate != nil {
		mutate(&sc)
	}
	sc, err = s.CreateSchedule(context.Background(), sc, store.AuditEvent{Actor: "op", Action: "schedule.create"})
	require.NoError(t, err)
	require.NotNil(t, sc.NextRunAt)
	return sc
}

func fire(t *testing.T, s *store.Store, now time.Time) []store.ScheduleRun {
	t.Helper()
	runs, err := s.FireSchedules(context.Background(), store.FireOptions{Now: now, Grace: time.Minute, Limit: 1000})
	require.NoError(t, err)
	return runs
}

// finish ends every open execution of the schedule's runs.
func finish(t *testing.T, s *store.Store, runs []store.Command) {
	t.Helper()
	for _, c := range runs {
		if c.FinishedAt == nil {
			_, err := s.CancelCommand(context.Background(), c.ID, "test", "")
			require.NoError(t, err)
		}
	}
}

// Several replicas fire at once: each due time gets exactly one command, in
// order, none missing.
func testScheduleFiresEachDueTimeOnce(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw1", "s1")
	sc := everySecond(t, s, func(sc *store.Schedule) { sc.Overlap = store.OverlapAllow })
	first := *sc.NextRunAt
	now := first.Add(5 * time.Second)

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.FireSchedules(ctx, store.FireOptions{Now: now, Grace: time.Minute, Limit: 1000})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Empty(t, fire(t, s, now), "nothing is due twice")

	got, runs, err := s.GetSchedule(ctx, sc.ID)
	require.NoError(t, err)
	all := slices.Clone(runs)
	slices.Reverse(all)
	require.Len(t, all, 6, "due times first .. first+5s, each once (fewer than LastRuns: all of them)")
	for i, c := range all {
		require.Equal(t, first.Add(time.Duration(i)*time.Second), c.DueAt.UTC(), "run %d", i)
		require.Equal(t, sc.ID, *c.ScheduleID)
		require.Equal(t, "op", c.CreatedBy)
	}
	require.Equal(t, first.Add(6*time.Second), got.NextRunAt.UTC())
	require.Equal(t, store.RunCreated, got.LastOutcome)
}

func testScheduleOverlap(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw1", "s1")
	for _, tc := range []struct {
		overlap  string
		outcome  string
		commands int
	}{
		{store.OverlapSkip, store.RunSkipped, 1},
		{store.OverlapAllow, store.RunCreated, 2},
		{store.OverlapCancelPrevious, store.RunCreated, 2},
	} {
		t.Run(tc.overlap, func(t *testing.T) {
			sc := everySecond(t, s, func(sc *store.Schedule) { sc.Overlap = tc.overlap })
			first := *sc.NextRunAt
			runs := fire(t, s, first)
			require.Len(t, runs, 1)
			require.Equal(t, store.RunCreated, runs[0].Outcome)
			prev := runs[0].Command.ID
			// The first run is still queued when the second falls due.
			runs = fire(t, s, first.Add(time.Second))
			require.Len(t, runs, 1)
			require.Equal(t, tc.outcome, runs[0].Outcome)
			_, cmds, err := s.GetSchedule(ctx, sc.ID)
			require.NoError(t, err)
			require.Len(t, cmds, tc.commands)
			old, _, err := s.GetCommand(ctx, prev)
			require.NoError(t, err)
			if tc.overlap == store.OverlapCancelPrevious {
				require.Equal(t, store.CommandCancelled, old.Status)
				require.Equal(t, "schedule:"+sc.ID, old.CancelledBy)
			} else {
				require.Equal(t, store.CommandQueued, old.Status)
			}
			finish(t, s, cmds)
			require.NoError(t, s.DeleteSchedule(ctx, sc.ID, store.AuditEvent{Actor: "op", Action: "schedule.delete"}))
		})
	}
}

// After every scheduler was down an hour: skip runs nothing and waits for the
// next due time; once runs one command, for the latest missed due time.
func testScheduleCatchUp(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw1", "s1")
	for _, tc := range []struct {
		catchUp  string
		outcome  string
		commands int
	}{
		{store.CatchUpSkip, store.RunMissed, 0},
		{store.CatchUpOnce, store.RunCreated, 1},
	} {
		t.Run(tc.catchUp, func(t *testing.T) {
			sc := everySecond(t, s, func(sc *store.Schedule) { sc.IntervalSeconds, sc.CatchUp = 60, tc.catchUp })
			now := sc.NextRunAt.Add(time.Hour + 30*time.Second)
			latest := sc.NextRunAt.Add(time.Hour)
			runs := fire(t, s, now)
			require.Len(t, runs, 1, "one outcome for the whole downtime")
			require.Equal(t, tc.outcome, runs[0].Outcome)
			require.Equal(t, latest, runs[0].DueAt)
			got, cmds, err := s.GetSchedule(ctx, sc.ID)
			require.NoError(t, err)
			require.Len(t, cmds, tc.commands)
			if tc.commands == 1 {
				require.Equal(t, latest, cmds[0].DueAt.UTC())
			}
			require.Equal(t, latest.Add(time.Minute), got.NextRunAt.UTC())
			require.Empty(t, fire(t, s, now))
			finish(t, s, cmds)
		})
	}
}

func testSchedulePauseResumeEndAndFailures(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Online(t, s, "a1", "gw1", "s1")
	audit := store.AuditEvent{Actor: "op", Action: "schedule.pause"}

	sc := everySecond(t, s, nil)
	paused, err := s.SetSchedulePaused(ctx, sc.ID, true, audit)
	require.NoError(t, err)
	require.True(t, paused.Paused)
	require.Empty(t, fire(t, s, sc.NextRunAt.Add(5*time.Second)), "a paused schedule does not fire")
	resumed, err := s.SetSchedulePaused(ctx, sc.ID, false, audit)
	require.NoError(t, err)
	require.False(t, resumed.Paused)
	require.True(t, resumed.NextRunAt.After(time.Now().Add(-time.Second)), "what fell due while paused does not run")
	_, err = s.SetSchedulePaused(ctx, "nope", true, audit)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.DeleteSchedule(ctx, sc.ID, audit))
	require.ErrorIs(t, s.DeleteSchedule(ctx, sc.ID, audit), store.ErrNotFound)

	// end_at: the timetable ends; the schedule stays, with no next run.
	start := time.Now().UTC().Truncate(time.Second).Add(time.Hour)
	end := start.Add(2 * time.Second)
	sc = everySecond(t, s, func(sc *store.Schedule) { sc.StartAt, sc.EndAt, sc.Overlap = &start, &end, store.OverlapAllow })
	require.Equal(t, start, sc.NextRunAt.UTC(), "the first due time is start_at")
	require.Len(t, fire(t, s, end.Add(time.Second)), 3)
	got, _, err := s.GetSchedule(ctx, sc.ID)
	require.NoError(t, err)
	require.Nil(t, got.NextRunAt)
	require.Nil(t, got.FireAt)

	// A run the targets refuse fails, says why, and the schedule goes on.
	spec := store.SpecOf(newCmd("echo", store.Targeting{Selector: &store.Selector{Site: "nowhere"}}))
	raw, _ := json.Marshal(spec)
	sc = everySecond(t, s, func(sc *store.Schedule) { sc.Command = raw })
	runs := fire(t, s, *sc.NextRunAt)
	require.Len(t, runs, 1)
	require.Contains(t, runs[0].Outcome, "failed: no registered agent matches")
	got, cmds, err := s.GetSchedule(ctx, sc.ID)
	require.NoError(t, err)
	require.Empty(t, cmds)
	require.Equal(t, sc.NextRunAt.Add(time.Second), got.NextRunAt.UTC())

	// A bad timetable is refused and nothing is stored.
	before, _, err := s.ListSchedules(ctx, store.Page{})
	require.NoError(t, err)
	_, err = s.CreateSchedule(ctx, store.Schedule{Name: "bad", Cron: "61 * * * *", Command: raw}, audit)
	var bad *timetable.Error
	require.ErrorAs(t, err, &bad)
	require.Equal(t, "cron", bad.Field)
	after, _, err := s.ListSchedules(ctx, store.Page{})
	require.NoError(t, err)
	require.Len(t, after, len(before))
}

func testTemplateVersions(t *testing.T, s *store.Store) {
	ctx := context.Background()
	audit := store.AuditEvent{Actor: "admin", Action: "template.save"}
	tpl := store.Template{Name: "restart", Verb: "echo", Args: store.JSON(`{"message":"{{svc}}"}`),
		Parameters: store.JSON(`{"svc":{"type":"string"}}`), Defaults: store.JSON(`{}`), CreatedBy: "admin"}
	// Concurrent saves get distinct versions.
	var wg sync.WaitGroup
	versions := make(chan int, 3)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			saved, err := s.SaveTemplate(ctx, tpl, audit)
			if err == nil {
				versions <- saved.Version
			}
		}()
	}
	wg.Wait()
	close(versions)
	var got []int
	for v := range versions {
		got = append(got, v)
	}
	require.ElementsMatch(t, []int{1, 2, 3}, got)

	latest, err := s.GetTemplate(ctx, "restart", 0)
	require.NoError(t, err)
	require.Equal(t, 3, latest.Version)
	v2, err := s.GetTemplate(ctx, "restart", 2)
	require.NoError(t, err)
	require.Equal(t, 2, v2.Version)
	all, err := s.TemplateVersions(ctx, "restart")
	require.NoError(t, err)
	require.Len(t, all, 3)
	list, _, err := s.ListTemplates(ctx, store.Page{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, 3, list[0].Version)

	require.NoError(t, s.RetireTemplate(ctx, "restart", audit))
	_, err = s.GetTemplate(ctx, "restart", 0)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GetTemplate(ctx, "restart", 2)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.RetireTemplate(ctx, "restart", audit), store.ErrNotFound)
	list, _, err = s.ListTemplates(ctx, store.Page{})
	require.NoError(t, err)
	require.Empty(t, list)
	// Made again, the name goes on counting: name@3 never means two things.
	again, err := s.SaveTemplate(ctx, tpl, audit)
	require.NoError(t, err)
	require.Equal(t, 4, again.Version)
}
