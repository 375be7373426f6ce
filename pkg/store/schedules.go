package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/viworks/backend-agent/pkg/timetable"
)

// Overlap policies: what a due time does while the schedule's previous run
// is still active.
const (
	OverlapSkip           = "skip"            // no run; the outcome says so
	OverlapAllow          = "allow"           // run alongside
	OverlapCancelPrevious = "cancel_previous" // cancel the active runs, then run
)

// Catch-up policies: what the due times missed while no scheduler ran become.
const (
	CatchUpSkip = "skip" // none runs; the next due time after now is awaited
	CatchUpOnce = "once" // one run, for the latest missed due time
)

// Outcomes of a due time (Schedule.LastOutcome, ScheduleRun.Outcome).
const (
	RunCreated = "created"
	RunSkipped = "skipped: the previous run is still active"
	RunMissed  = "missed: no scheduler ran at the due time (catch_up skip)"
	runFailed  = "failed: "
)

// LastRuns is how many of a schedule's runs GetSchedule returns.
const LastRuns = 10

// MaxSchedules bounds the schedules that exist at once.
const MaxSchedules = 1000

// CommandSpec is the command each run of a schedule creates: what
// POST /api/v1/commands would have made of the schedule's command part
// (defaults applied, args rendered from the template and sealed), so that a
// run goes through the same create path (CreateCommand's) as any command.
type CommandSpec struct {
	Verb           string          `json:"verb"`
	Args           json.RawMessage `json:"args"`
	ArgsSealed     bool            `json:"args_sealed,omitempty"`
	Priority       Priority        `json:"priority"`
	TimeoutSeconds int             `json:"timeout_seconds"`
	MaxRetries     int             `json:"max_retries"`
	TTLSeconds     int             `json:"ttl_seconds"`
	Mode           string          `json:"mode,omitempty"`
	Targeting      Targeting       `json:"targeting"`
	MaxConcurrency int             `json:"max_concurrency,omitempty"`
	MaxErrors      *int            `json:"max_errors,omitempty"`
	// AuditDetails are the details of each run's command.create audit event
	// (args redacted); the run adds its schedule and due time.
	AuditDetails json.RawMessage `json:"audit_details,omitempty"`
}

// SpecOf is the CommandSpec of nc.
func SpecOf(nc NewCommand) CommandSpec {
	return CommandSpec{
		Verb: nc.Verb, Args: json.RawMessage(nc.Args), ArgsSealed: nc.ArgsSealed, Priority: nc.Priority, TimeoutSeconds: nc.TimeoutSeconds,
		MaxRetries: nc.MaxRetries, TTLSeconds: nc.TTLSeconds, Mode: nc.Mode, Targeting: nc.Targeting,
		MaxConcurrency: nc.MaxConcurrency, MaxErrors: nc.MaxErrors, AuditDetails: json.RawMessage(nc.Audit.Details),
	}
}

// Schedule fires a command at each due time of its timetable.
type Schedule struct {
	ID              string `gorm:"primaryKey"`
	Name            string `gorm:"not null"`
	Cron            string `gorm:"not null"`
	Timezone        string `gorm:"not null"`
	IntervalSeconds int    `gorm:"not null"`
	JitterSeconds   int    `gorm:"not null"`
	Overlap         string `gorm:"not null"`
	CatchUp         string `gorm:"not null"`
	StartAt         *time.Time
	EndAt           *time.Time
	AnchorAt        time.Time  // interval due times count from here (StartAt when set)
	Template        string     `gorm:"not null"`            // "name@version" it was made from; "" for an inline command
	Params          JSON       `gorm:"type:jsonb;not null"` // as given, secret ones redacted
	Command         JSON       `gorm:"type:jsonb;not null"` // CommandSpec
	Paused          bool       `gorm:"not null"`
	NextRunAt       *time.Time // next due time; nil once the timetable ended
	FireAt          *time.Time // NextRunAt plus this run's jitter
	LastRunAt       *time.Time // the latest due time handled
	LastOutcome     string     `gorm:"not null"`
	CreatedBy       string     `gorm:"not null"`
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Timetable is the schedule's timetable.
func (sc Schedule) Timetable() (*timetable.Timetable, error) {
	return timetable.Parse(timetable.Spec{
		Cron: sc.Cron, Timezone: sc.Timezone, Interval: time.Duration(sc.IntervalSeconds) * time.Second,
		Anchor: sc.AnchorAt, Start: sc.StartAt, End: sc.EndAt,
	})
}

// plan sets the schedule's next due time to the first after t (none: the
// timetable ended), and its fire time with a fresh jitter.
func (sc *Schedule) plan(tt *timetable.Timetable, t time.Time) {
	next, ok := tt.Next(t)
	if !ok {
		sc.NextRunAt, sc.FireAt = nil, nil
		return
	}
	fire := next.Add(timetable.Jitter(time.Duration(sc.JitterSeconds) * time.Second))
	sc.NextRunAt, sc.FireAt = &next, &fire
}

// CreateSchedule validates sc's timetable, plans its first due time (the
// first after now) and stores it with the audit event. A bad timetable is a
// *timetable.Error and nothing is stored; beyond MaxSchedules it is
// ErrLimitReached.
func (s *Store) CreateSchedule(ctx context.Context, sc Schedule, audit AuditEvent) (Schedule, error) {
	now := time.Now().UTC()
	sc.ID, sc.CreatedAt, sc.UpdatedAt = uuid.NewString(), now, now
	sc.AnchorAt = now.Truncate(time.Second)
	if sc.Overlap == "" {
		sc.Overlap = OverlapSkip
	}
	if sc.CatchUp == "" {
		sc.CatchUp = CatchUpSkip
	}
	if len(sc.Params) == 0 {
		sc.Params = JSON("{}")
	}
	tt, err := sc.Timetable()
	if err != nil {
		return Schedule{}, err
	}
	sc.plan(tt, now)
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&Schedule{}).Count(&n).Error; err != nil {
			return fmt.Errorf("counting schedules: %w", err)
		}
		if n >= MaxSchedules {
			return fmt.Errorf("%w: at most %d schedules", ErrLimitReached, MaxSchedules)
		}
		if err := tx.Create(&sc).Error; err != nil {
			return fmt.Errorf("inserting schedule: %w", err)
		}
		return s.insertAudit(tx, audit, sc.ID, now)
	})
	if err != nil {
		return Schedule{}, err
	}
	return sc, nil
}

// GetSchedule returns a schedule and its latest runs (newest due time
// first), or ErrNotFound.
func (s *Store) GetSchedule(ctx context.Context, id string) (Schedule, []Command, error) {
	var sc Schedule
	res := s.db.WithContext(ctx).Where("id = ?", id).Limit(1).Find(&sc)
	if res.Error != nil {
		return sc, nil, fmt.Errorf("getting schedule: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return sc, nil, ErrNotFound
	}
	runs, err := s.scheduleRuns(s.db.WithContext(ctx), id, LastRuns)
	return sc, runs, err
}

func (s *Store) scheduleRuns(db *gorm.DB, id string, limit int) ([]Command, error) {
	var runs []Command
	if err := db.Where("schedule_id = ?", id).Order("due_at DESC").Limit(limit).Find(&runs).Error; err != nil {
		return nil, fmt.Errorf("getting schedule runs: %w", err)
	}
	return runs, nil
}

// ListSchedules returns schedules, newest first, a page at a time.
func (s *Store) ListSchedules(ctx context.Context, p Page) ([]Schedule, string, error) {
	q, err := keyset(s.db.WithContext(ctx).Model(&Schedule{}), p, "created_at", false)
	if err != nil {
		return nil, "", err
	}
	var rows []Schedule
	if err := q.Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing schedules: %w", err)
	}
	rows, next := nextCursor(rows, p, func(r Schedule) (time.Time, string) { return r.CreatedAt, r.ID })
	return rows, next, nil
}

// SetSchedulePaused pauses or resumes a schedule. Resuming plans the first
// due time after now: what fell due while paused does not run. Unknown ids
// give ErrNotFound.
func (s *Store) SetSchedulePaused(ctx context.Context, id string, paused bool, audit AuditEvent) (Schedule, error) {
	var sc Schedule
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Limit(1).Find(&sc)
		if res.Error != nil {
			return fmt.Errorf("locking schedule: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		now := time.Now().UTC()
		upd := map[string]any{"paused": paused, "updated_at": now}
		if !paused && sc.Paused {
			tt, err := sc.Timetable()
			if err != nil {
				return fmt.Errorf("reading the schedule's timetable: %w", err)
			}
			sc.plan(tt, now)
			upd["next_run_at"], upd["fire_at"] = sc.NextRunAt, sc.FireAt
		}
		if err := tx.Model(&Schedule{}).Where("id = ?", id).Updates(upd).Error; err != nil {
			return fmt.Errorf("updating schedule: %w", err)
		}
		sc.Paused, sc.UpdatedAt = paused, now
		return s.insertAudit(tx, audit, id, now)
	})
	return sc, err
}

// DeleteSchedule deletes a schedule; its runs stay commands carrying its id.
// Unknown ids give ErrNotFound.
func (s *Store) DeleteSchedule(ctx context.Context, id string, audit AuditEvent) error {
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("id = ?", id).Delete(&Schedule{})
		if res.Error != nil {
			return fmt.Errorf("deleting schedule: %w", res.Error)
		}
		if res.RowsAffected == 0 {
			return ErrNotFound
		}
		return s.insertAudit(tx, audit, id, time.Now().UTC())
	})
}

// FireOptions bound one FireSchedules call.
type FireOptions struct {
	Now time.Time
	// Grace is how late a due time may still fire as such; one later than
	// that was missed while no scheduler ran, and its schedule's catch_up
	// decides.
	Grace     time.Duration
	MaxQueued int // bound on queued executions system-wide (max_command_queue_size); 0: unbounded
	Limit     int // due times handled per call
}

// ScheduleRun is what one due time of a schedule became.
type ScheduleRun struct {
	ScheduleID string
	DueAt      time.Time
	Outcome    string   // RunCreated, RunSkipped, RunMissed, or "failed: <reason>"
	Command    *Command // the run's command (RunCreated)
	// Cancelled are the dispatched and running executions of previous runs
	// that cancel_previous cancelled: their agents need a CANCEL.
	Cancelled []Timeout
}

// FireSchedules handles due times whose fire time has passed, one schedule
// per transaction, up to o.Limit: it claims the schedule row (Postgres:
// FOR UPDATE SKIP LOCKED, so replicas take different schedules and none
// waits behind another), creates the run's command in the same transaction
// (the unique (schedule_id, due_at) refuses a second command for a due
// time), and plans the next due time. A replica killed mid-way rolls back:
// the due time stays due and the next replica to look fires it. Exactly once
// per due time follows.
func (s *Store) FireSchedules(ctx context.Context, o FireOptions) ([]ScheduleRun, error) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	var runs []ScheduleRun
	for range o.Limit {
		run, found, err := s.fireOne(ctx, o)
		if err != nil {
			return runs, err
		}
		if !found {
			break
		}
		runs = append(runs, run)
	}
	return runs, nil
}

func (s *Store) fireOne(ctx context.Context, o FireOptions) (ScheduleRun, bool, error) {
	var run ScheduleRun
	var found bool
	var changes []CommandChange
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		run, found, changes = ScheduleRun{}, false, nil
		sc, ok, err := s.lockDueSchedule(tx, o.Now)
		if err != nil || !ok {
			return err
		}
		found = true
		run.ScheduleID, run.DueAt = sc.ID, *sc.NextRunAt
		tt, err := sc.Timetable()
		if err != nil { // validated when stored; park it rather than retry forever
			run.Outcome = runFailed + err.Error()
			return s.afterRun(tx, &sc, nil, run, o.Now)
		}
		fire := true
		if o.Now.Sub(*sc.FireAt) > o.Grace {
			last, _ := tt.Latest(run.DueAt, o.Now)
			if sc.CatchUp == CatchUpOnce {
				run.DueAt = last
			} else {
				run.DueAt, run.Outcome, fire = last, RunMissed, false
			}
		}
		if fire {
			if err := s.fireRun(tx, sc, &run, o, &changes); err != nil {
				return err
			}
		}
		return s.afterRun(tx, &sc, tt, run, o.Now)
	})
	if err != nil {
		return ScheduleRun{}, false, fmt.Errorf("firing schedule: %w", err)
	}
	s.notify(ctx, changes)
	return run, found, nil
}

// lockDueSchedule claims the schedule whose fire time passed longest ago.
// On Postgres the row lock is taken with SKIP LOCKED (the dialect's
// skipLocked), so each replica claims a different schedule and a claim in
// flight is never waited for; SQLite's single writer serialises the
// transactions.
func (s *Store) lockDueSchedule(tx *gorm.DB, now time.Time) (Schedule, bool, error) {
	q := s.dialect.skipLocked(tx.Where("NOT paused AND fire_at IS NOT NULL AND fire_at <= ?", now.UTC()).Order("fire_at").Order("id").Limit(1))
	var sc Schedule
	res := q.Find(&sc)
	if res.Error != nil {
		return sc, false, fmt.Errorf("claiming a due schedule: %w", res.Error)
	}
	return sc, res.RowsAffected > 0, nil
}

// fireRun applies the overlap policy and creates the run's command; a run
// the targets or the queue refuse fails without a command (the outcome says
// why).
func (s *Store) fireRun(tx *gorm.DB, sc Schedule, run *ScheduleRun, o FireOptions, changes *[]CommandChange) error {
	var active []string
	if sc.Overlap != OverlapAllow {
		if err := tx.Model(&Command{}).Where("schedule_id = ? AND finished_at IS NULL", sc.ID).Order("due_at").Pluck("id", &active).Error; err != nil {
			return fmt.Errorf("finding the schedule's active runs: %w", err)
		}
	}
	if len(active) > 0 && sc.Overlap == OverlapSkip {
		run.Outcome = RunSkipped
		return nil
	}
	var spec CommandSpec
	if err := json.Unmarshal(sc.Command, &spec); err != nil {
		run.Outcome = runFailed + "the schedule's command does not decode"
		return nil
	}
	details := map[string]any{}
	_ = json.Unmarshal(spec.AuditDetails, &details)
	details["schedule_id"], details["due_at"] = sc.ID, run.DueAt
	detailsJSON, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("encoding audit details: %w", err)
	}
	nc := NewCommand{
		Verb: spec.Verb, Args: JSON(spec.Args), ArgsSealed: spec.ArgsSealed, Priority: spec.Priority, CreatedBy: sc.CreatedBy,
		TimeoutSeconds: spec.TimeoutSeconds, MaxRetries: spec.MaxRetries, TTLSeconds: spec.TTLSeconds, Mode: spec.Mode,
		Targeting: spec.Targeting, MaxConcurrency: spec.MaxConcurrency, MaxErrors: spec.MaxErrors, MaxQueued: o.MaxQueued,
		ScheduleID: sc.ID, DueAt: run.DueAt,
		Audit: AuditEvent{Actor: "schedule:" + sc.ID, Action: "command.create", Details: detailsJSON},
	}
	now := time.Now().UTC()
	cmd, err := commandRow(nc, now)
	if err != nil {
		return err
	}
	_, err = s.createCommandTx(tx, &cmd, nc, now)
	var unknown *UnknownAgentsError
	var incapable *IncapableAgentsError
	switch {
	case errors.Is(err, errRunExists):
		run.Outcome = RunCreated // by another claim: this due time has its command
		return nil
	case errors.As(err, &unknown), errors.As(err, &incapable), errors.Is(err, ErrNoMatchingAgents),
		errors.Is(err, ErrNoOnlineAgent), errors.Is(err, ErrQueueFull):
		run.Outcome = runFailed + err.Error()
		return nil
	case err != nil:
		return err
	}
	for _, id := range active { // cancel_previous
		running, err := s.cancelCommandTx(tx, id, "schedule:"+sc.ID, "", changes)
		if err != nil && !errors.Is(err, ErrCommandFinal) {
			return err
		}
		run.Cancelled = append(run.Cancelled, running...)
	}
	run.Outcome, run.Command = RunCreated, &cmd
	return nil
}

// afterRun records the run's outcome on the schedule and plans its next due
// time (none when tt is nil: the schedule is parked).
func (s *Store) afterRun(tx *gorm.DB, sc *Schedule, tt *timetable.Timetable, run ScheduleRun, now time.Time) error {
	if tt != nil {
		sc.plan(tt, run.DueAt)
	} else {
		sc.NextRunAt, sc.FireAt = nil, nil
	}
	due := run.DueAt
	err := tx.Model(&Schedule{}).Where("id = ?", sc.ID).Updates(map[string]any{
		"next_run_at": sc.NextRunAt, "fire_at": sc.FireAt, "last_run_at": &due, "last_outcome": run.Outcome, "updated_at": now.UTC(),
	}).Error
	if err != nil {
		return fmt.Errorf("planning the schedule's next run: %w", err)
	}
	return nil
}
