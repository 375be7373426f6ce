-- 0013: command templates and schedules.
--
-- A template is a named, versioned command definition: every change is a new
-- version; DELETE retires every version of the name.
CREATE TABLE command_templates (
    name        text        NOT NULL,
    version     integer     NOT NULL,
    verb        text        NOT NULL,
    args        jsonb       NOT NULL DEFAULT '{}',
    parameters  jsonb       NOT NULL DEFAULT '{}',
    defaults    jsonb       NOT NULL DEFAULT '{}',
    description text        NOT NULL DEFAULT '',
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    retired_at  timestamptz,
    PRIMARY KEY (name, version)
);

-- A schedule fires an ordinary command at each due time of its timetable (a
-- cron expression in a time zone, or a fixed interval). next_run_at is the next
-- due time (NULL once the timetable has ended), fire_at that time plus the
-- run's jitter: a scheduler claims a schedule whose fire_at has passed.
CREATE TABLE schedules (
    id               text PRIMARY KEY,
    name             text        NOT NULL,
    cron             text        NOT NULL DEFAULT '',
    timezone         text        NOT NULL DEFAULT '',
    interval_seconds integer     NOT NULL DEFAULT 0,
    jitter_seconds   integer     NOT NULL DEFAULT 0,
    overlap          text        NOT NULL DEFAULT 'skip',
    catch_up         text        NOT NULL DEFAULT 'skip',
    start_at         timestamptz,
    end_at           timestamptz,
    anchor_at        timestamptz NOT NULL,
    template         text        NOT NULL DEFAULT '',
    params           jsonb       NOT NULL DEFAULT '{}',
    command          jsonb       NOT NULL,
    paused           boolean     NOT NULL DEFAULT FALSE,
    next_run_at      timestamptz,
    fire_at          timestamptz,
    last_run_at      timestamptz,
    last_outcome     text        NOT NULL DEFAULT '',
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX schedules_fire_idx ON schedules (fire_at) WHERE NOT paused AND fire_at IS NOT NULL;
CREATE INDEX schedules_created_idx ON schedules (created_at DESC, id DESC);

-- Every run is a command carrying its schedule and due time; a due time fires
-- at most once (NULLs, the commands of no schedule, are all distinct).
ALTER TABLE commands ADD COLUMN schedule_id text;
ALTER TABLE commands ADD COLUMN due_at timestamptz;
CREATE UNIQUE INDEX commands_schedule_due_idx ON commands (schedule_id, due_at);
