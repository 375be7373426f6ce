// Package timetable computes the due times of a schedule: a cron expression
// (robfig/cron v3, five fields or a descriptor such as @daily) in an IANA time
// zone, or a fixed interval from an anchor, bounded by an optional start and
// end. The zone database is embedded (time/tzdata), so a static binary knows
// every zone.
package timetable

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	_ "time/tzdata" // zones for static binaries without /usr/share/zoneinfo

	"github.com/robfig/cron/v3"
)

// MinInterval is the shortest interval a schedule may have.
const MinInterval = time.Second

// MaxInterval and MaxJitter bound a schedule's interval and jitter.
const (
	MaxInterval = 366 * 24 * time.Hour
	MaxJitter   = time.Hour
)

// maxCatchUpSteps bounds the due times walked to find the latest missed one
// of a cron timetable (a week of minutes).
const maxCatchUpSteps = 7 * 24 * 60

// Spec describes a timetable. Exactly one of Cron and Interval is set.
type Spec struct {
	Cron     string
	Timezone string // IANA name; "" is UTC (cron only)
	Interval time.Duration
	Anchor   time.Time // interval due times are Anchor + k·Interval (Start when set)
	Start    *time.Time
	End      *time.Time
}

// Error names the field of a Spec that is wrong.
type Error struct {
	Field   string // cron, timezone, interval_seconds, start_at, end_at
	Message string
}

func (e *Error) Error() string { return e.Field + ": " + e.Message }

// Timetable answers the due times of a Spec.
type Timetable struct {
	cron     cron.Schedule
	interval time.Duration
	anchor   time.Time
	start    *time.Time
	end      *time.Time
}

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse checks a Spec and builds its Timetable; a mistake is an *Error.
func Parse(s Spec) (*Timetable, error) {
	t := &Timetable{start: s.Start, end: s.End}
	switch {
	case s.Cron != "" && s.Interval != 0:
		return nil, &Error{"cron", "give cron or interval_seconds, not both"}
	case s.Cron == "" && s.Interval == 0:
		return nil, &Error{"cron", "cron or interval_seconds is required"}
	case s.Cron != "":
		up := strings.ToUpper(strings.TrimSpace(s.Cron))
		if strings.HasPrefix(up, "TZ=") || strings.HasPrefix(up, "CRON_TZ=") {
			return nil, &Error{"cron", "name the time zone in timezone, not in the expression"}
		}
		if strings.HasPrefix(up, "@EVERY") {
			return nil, &Error{"cron", "use interval_seconds for a fixed interval"}
		}
		loc := time.UTC
		if s.Timezone != "" {
			l, err := time.LoadLocation(s.Timezone)
			if err != nil || s.Timezone == "Local" {
				return nil, &Error{"timezone", fmt.Sprintf("unknown time zone %q (an IANA name such as Europe/Berlin)", s.Timezone)}
			}
			loc = l
		}
		sched, err := parser.Parse(s.Cron)
		if err != nil {
			return nil, &Error{"cron", "unparsable cron expression: " + err.Error()}
		}
		spec, ok := sched.(*cron.SpecSchedule)
		if !ok {
			return nil, &Error{"cron", "unsupported cron expression"}
		}
		spec.Location = loc
		t.cron = spec
	default:
		if s.Timezone != "" {
			return nil, &Error{"timezone", "applies to cron only"}
		}
		if s.Interval < MinInterval || s.Interval > MaxInterval {
			return nil, &Error{"interval_seconds", fmt.Sprintf("must be from %d to %d seconds", int(MinInterval/time.Second), int(MaxInterval/time.Second))}
		}
		if s.Interval%time.Second != 0 {
			return nil, &Error{"interval_seconds", "must be whole seconds"}
		}
		t.interval = s.Interval
		t.anchor = s.Anchor.UTC().Truncate(time.Second)
		if s.Start != nil {
			t.anchor = s.Start.UTC().Truncate(time.Second)
		}
	}
	if s.Start != nil && s.End != nil && !s.End.After(*s.Start) {
		return nil, &Error{"end_at", "must be after start_at"}
	}
	return t, nil
}

// Next is the first due time strictly after t, or false when the timetable
// has ended (after End).
func (tt *Timetable) Next(t time.Time) (time.Time, bool) {
	if tt.start != nil && t.Before(*tt.start) {
		t = tt.start.Add(-time.Nanosecond)
	}
	var next time.Time
	if tt.cron != nil {
		next = tt.cron.Next(t)
		if next.IsZero() {
			return time.Time{}, false
		}
	} else {
		if t.Before(tt.anchor) {
			next = tt.anchor
		} else {
			k := t.Sub(tt.anchor)/tt.interval + 1
			next = tt.anchor.Add(k * tt.interval)
		}
	}
	next = next.UTC()
	if tt.end != nil && next.After(*tt.end) {
		return time.Time{}, false
	}
	return next, true
}

// Latest is the last due time at or before now, starting the search at from
// (a due time), or false when there is none from there on.
func (tt *Timetable) Latest(from, now time.Time) (time.Time, bool) {
	if from.After(now) {
		return time.Time{}, false
	}
	if tt.cron == nil {
		k := now.Sub(tt.anchor) / tt.interval
		last := tt.anchor.Add(k * tt.interval).UTC()
		if tt.end != nil && last.After(*tt.end) {
			last = tt.anchor.Add(tt.end.Sub(tt.anchor) / tt.interval * tt.interval).UTC()
		}
		return last, !last.Before(from)
	}
	last := from
	for range maxCatchUpSteps {
		n, ok := tt.Next(last)
		if !ok || n.After(now) {
			return last, true
		}
		last = n
	}
	return last, true
}

// Jitter is a random delay in [0, max): spread over replicas' clocks and
// agents, so that many schedules due at once do not fire together.
func Jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max) //nolint:gosec // G404: schedule jitter, not a secret
}
