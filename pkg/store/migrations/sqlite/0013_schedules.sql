-- 0013: command templates and schedules (SQLite twin of postgres/0013).
--
-- A template is a named, versioned command definition: every change is a new
-- version; DELETE retires every version of the name.
CREATE TABLE command_templates (
    name        TEXT        NOT NULL,
    version     INTEGER     NOT NULL,
    verb        TEXT        NOT NULL,
    args        TEXT        NOT NULL DEFAULT '{}',
    parameters  TEXT        NOT NULL DEFAULT '{}',
    defaults    TEXT        NOT NULL DEFAULT '{}',
    description TEXT        NOT NULL DEFAULT '',
    created_by  TEXT        NOT NULL,
    created_at  DATETIME NOT NULL,
    retired_at  DATETIME,
    PRIMARY KEY (name, version)
);

-- A schedule fires an ordinary command at each due time of its timetable (a
-- cron expression in a time zone, or a fixed interval). next_run_at is the next
-- due time (NULL once the timetable has ended), fire_at that time plus the
-- run's jitter: a scheduler claims a schedule whose fire_at has passed.
CREATE TABLE schedules (
    id               TEXT PRIMARY KEY,
    name             TEXT        NOT NULL,
    cron             TEXT        NOT NULL DEFAULT '',
    timezone         TEXT        NOT NULL DEFAULT '',
    interval_seconds INTEGER     NOT NULL DEFAULT 0,
    jitter_seconds   INTEGER     NOT NULL DEFAULT 0,
    overlap          TEXT        NOT NULL DEFAULT 'skip',
    catch_up         TEXT        NOT NULL DEFAULT 'skip',
    start_at         DATETIME,
    end_at           DATETIME,
    anchor_at        DATETIME NOT NULL,
    template         TEXT        NOT NULL DEFAULT '',
    params           TEXT        NOT NULL DEFAULT '{}',
    command          TEXT        NOT NULL,
    paused           BOOLEAN     NOT NULL DEFAULT FALSE,
    next_run_at      DATETIME,
    fire_at          DATETIME,
    last_run_at      DATETIME,
    last_outcome     TEXT        NOT NULL DEFAULT '',
    created_by       TEXT        NOT NULL,
    created_at       DATETIME NOT NULL,
    updated_at       DATETIME NOT NULL
);
CREATE INDEX schedules_fire_idx ON schedules (fire_at) WHERE NOT paused AND fire_at IS NOT NULL;
CREATE INDEX schedules_created_idx ON schedules (created_at DESC, id DESC);

-- Every run is a command carrying its schedule and due time; a due time fires
-- at most once (NULLs, the commands of no schedule, are all distinct).
ALTER TABLE commands ADD COLUMN schedule_id text;
ALTER TABLE commands ADD COLUMN due_at DATETIME;
CREATE UNIQUE INDEX commands_schedule_due_idx ON commands (schedule_id, due_at);
