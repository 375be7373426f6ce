-- 0001: agents, commands, executions, telemetry, audit (SQLite twin of postgres/0001).
-- Times are written by the application in UTC ("_time_format=sqlite"), so text
-- comparison orders them; JSON columns hold JSON text.
CREATE TABLE agents (
    id             TEXT PRIMARY KEY,
    status         TEXT     NOT NULL DEFAULT 'offline',
    site           TEXT     NOT NULL DEFAULT '',
    version        TEXT     NOT NULL DEFAULT '',
    hostname       TEXT     NOT NULL DEFAULT '',
    os             TEXT     NOT NULL DEFAULT '',
    arch           TEXT     NOT NULL DEFAULT '',
    capabilities   TEXT     NOT NULL DEFAULT '[]',
    labels         TEXT     NOT NULL DEFAULT '{}',
    gateway_id     TEXT     NOT NULL DEFAULT '',
    session_id     TEXT     NOT NULL DEFAULT '',
    health_status  TEXT     NOT NULL DEFAULT '',
    uptime_s       INTEGER  NOT NULL DEFAULT 0,
    connected_at   DATETIME,
    last_seen_at   DATETIME,
    created_at     DATETIME NOT NULL,
    updated_at     DATETIME NOT NULL
);
CREATE INDEX agents_status_idx ON agents (status, id);

CREATE TABLE commands (
    id              TEXT PRIMARY KEY,
    verb            TEXT     NOT NULL,
    args            TEXT     NOT NULL DEFAULT '{}',
    priority        INTEGER  NOT NULL DEFAULT 1,
    status          TEXT     NOT NULL,
    created_by      TEXT     NOT NULL,
    timeout_seconds INTEGER  NOT NULL,
    max_retries     INTEGER  NOT NULL,
    ttl_seconds     INTEGER  NOT NULL,
    mode            TEXT     NOT NULL DEFAULT 'all',
    targeting       TEXT     NOT NULL DEFAULT '{}',
    max_concurrency INTEGER  NOT NULL DEFAULT 0,
    max_errors      INTEGER,
    cancelled_by    TEXT     NOT NULL DEFAULT '',
    expires_at      DATETIME NOT NULL,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL,
    finished_at     DATETIME
);
CREATE INDEX commands_created_idx ON commands (created_at DESC, id DESC);
CREATE INDEX commands_finished_idx ON commands (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    command_id      TEXT     NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    agent_id        TEXT     NOT NULL,
    status          TEXT     NOT NULL,
    priority        INTEGER  NOT NULL,
    attempts        INTEGER  NOT NULL DEFAULT 0,
    next_attempt_at DATETIME NOT NULL,
    ack_deadline    DATETIME,
    deadline_at     DATETIME,
    gateway_id      TEXT     NOT NULL DEFAULT '',
    exit_code       INTEGER,
    output          TEXT     NOT NULL DEFAULT '',
    error           TEXT     NOT NULL DEFAULT '',
    dispatched_at   DATETIME,
    started_at      DATETIME,
    finished_at     DATETIME,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL,
    UNIQUE (command_id, agent_id)
);
CREATE INDEX executions_due_idx ON executions (priority DESC, created_at, id) WHERE status IN ('queued', 'retrying');
CREATE INDEX executions_inflight_idx ON executions (deadline_at) WHERE status IN ('dispatched', 'running');
CREATE INDEX executions_ack_idx ON executions (ack_deadline) WHERE status = 'dispatched';
CREATE INDEX executions_agent_idx ON executions (agent_id, status);

CREATE TABLE telemetry (
    agent_id    TEXT     NOT NULL,
    ts          DATETIME NOT NULL,
    metrics     TEXT     NOT NULL,
    received_at DATETIME NOT NULL
);
CREATE INDEX telemetry_agent_ts_idx ON telemetry (agent_id, ts DESC);
CREATE INDEX telemetry_ts_idx ON telemetry (ts);

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         DATETIME NOT NULL,
    actor      TEXT     NOT NULL,
    action     TEXT     NOT NULL,
    target     TEXT     NOT NULL DEFAULT '',
    request_id TEXT     NOT NULL DEFAULT '',
    details    TEXT     NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at_idx ON audit_events (at DESC);

-- Public halves of the command signing keys, announced by gateways in WELCOME.
CREATE TABLE signing_keys (
    key_id     TEXT PRIMARY KEY,
    public_key TEXT     NOT NULL,
    created_at DATETIME NOT NULL
);
