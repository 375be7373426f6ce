package timetable_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/timetable"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// walk returns the n due times after from.
func walk(t *testing.T, tt *timetable.Timetable, from time.Time, n int) []time.Time {
	t.Helper()
	var out []time.Time
	for range n {
		next, ok := tt.Next(from)
		require.True(t, ok)
		out = append(out, next)
		from = next
	}
	return out
}

// Cron in a time zone across both DST changes of Europe/Berlin in 2026
// (29 March 02:00 CET → 03:00 CEST; 25 October 03:00 CEST → 02:00 CET).
func TestCronAcrossDST(t *testing.T) {
	for _, tc := range []struct {
		name, cron string
		from       time.Time
		want       []time.Time
	}{
		{
			// 09:00 local stays 09:00: the UTC time moves by the offset change.
			name: "spring, daily 09:00", cron: "0 9 * * *", from: utc("2026-03-27T12:00:00Z"),
			want: []time.Time{utc("2026-03-28T08:00:00Z"), utc("2026-03-29T07:00:00Z"), utc("2026-03-30T07:00:00Z")},
		},
		{
			name: "autumn, daily 09:00", cron: "0 9 * * *", from: utc("2026-10-24T12:00:00Z"),
			want: []time.Time{utc("2026-10-25T08:00:00Z"), utc("2026-10-26T08:00:00Z")},
		},
		{
			// 02:30 does not exist on 29 March: that day has no run.
			name: "spring, daily 02:30 skipped", cron: "30 2 * * *", from: utc("2026-03-27T12:00:00Z"),
			want: []time.Time{utc("2026-03-28T01:30:00Z"), utc("2026-03-30T00:30:00Z")},
		},
		{
			// 02:30 happens twice on 25 October (CEST, then CET): both fire.
			name: "autumn, daily 02:30 twice", cron: "30 2 * * *", from: utc("2026-10-24T12:00:00Z"),
			want: []time.Time{utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:30:00Z"), utc("2026-10-26T01:30:00Z")},
		},
		{
			// Every 30 minutes keeps its real 30-minute spacing through the change.
			name: "autumn, every 30 minutes", cron: "*/30 * * * *", from: utc("2026-10-24T23:15:00Z"),
			want: []time.Time{utc("2026-10-24T23:30:00Z"), utc("2026-10-25T00:00:00Z"), utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:00:00Z")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt, err := timetable.Parse(timetable.Spec{Cron: tc.cron, Timezone: "Europe/Berlin"})
			require.NoError(t, err)
			require.Equal(t, tc.want, walk(t, tt, tc.from, len(tc.want)))
		})
	}
}

func TestIntervalStartEndLatest(t *testing.T) {
	anchor := utc("2026-01-01T00:00:00Z")
	tt, err := timetable.Parse(timetable.Spec{Interval: 10 * time.Second, Anchor: anchor.Add(300 * time.Millisecond)})
	require.NoError(t, err)
	require.Equal(t, []time.Time{anchor.Add(10 * time.Second), anchor.Add(20 * time.Second)}, walk(t, tt, anchor, 2), "anchored on whole seconds")
	require.Equal(t, []time.Time{anchor.Add(20 * time.Second)}, walk(t, tt, anchor.Add(10*time.Second), 1), "strictly after")
	latest, ok := tt.Latest(anchor.Add(10*time.Second), anchor.Add(95*time.Second))
	require.True(t, ok)
	require.Equal(t, anchor.Add(90*time.Second), latest)

	start, end := anchor.Add(time.Hour), anchor.Add(time.Hour+20*time.Second)
	tt, err = timetable.Parse(timetable.Spec{Interval: 10 * time.Second, Anchor: anchor, Start: &start, End: &end})
	require.NoError(t, err)
	require.Equal(t, []time.Time{start, start.Add(10 * time.Second), end}, walk(t, tt, anchor, 3), "from start_at to end_at")
	_, ok = tt.Next(end)
	require.False(t, ok, "ended")

	tt, err = timetable.Parse(timetable.Spec{Cron: "0 * * * *"})
	require.NoError(t, err)
	latest, ok = tt.Latest(utc("2026-01-01T01:00:00Z"), utc("2026-01-01T05:30:00Z"))
	require.True(t, ok)
	require.Equal(t, utc("2026-01-01T05:00:00Z"), latest)
}

func TestParseRefuses(t *testing.T) {
	now := time.Now()
	before := now.Add(-time.Hour)
	for _, tc := range []struct {
		name  string
		spec  timetable.Spec
		field string
	}{
		{"neither", timetable.Spec{}, "cron"},
		{"both", timetable.Spec{Cron: "* * * * *", Interval: time.Second}, "cron"},
		{"unparsable cron", timetable.Spec{Cron: "every day"}, "cron"},
		{"minute out of range", timetable.Spec{Cron: "61 * * * *"}, "cron"},
		{"zone in the expression", timetable.Spec{Cron: "CRON_TZ=UTC * * * * *"}, "cron"},
		{"@every", timetable.Spec{Cron: "@every 1s"}, "cron"},
		{"unknown zone", timetable.Spec{Cron: "* * * * *", Timezone: "Mars/Olympus"}, "timezone"},
		{"Local is not a zone", timetable.Spec{Cron: "* * * * *", Timezone: "Local"}, "timezone"},
		{"zone with an interval", timetable.Spec{Interval: time.Minute, Timezone: "UTC"}, "timezone"},
		{"interval below 1 s", timetable.Spec{Interval: 500 * time.Millisecond}, "interval_seconds"},
		{"negative interval", timetable.Spec{Interval: -time.Second}, "interval_seconds"},
		{"end before start", timetable.Spec{Interval: time.Second, Start: &now, End: &before}, "end_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := timetable.Parse(tc.spec)
			var e *timetable.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, tc.field, e.Field)
		})
	}
	_, err := timetable.Parse(timetable.Spec{Cron: "@daily", Timezone: "America/New_York"})
	require.NoError(t, err)
}
