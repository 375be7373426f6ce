-- 0001: agents, commands, executions, telemetry, audit.
CREATE TABLE agents (
    id             text PRIMARY KEY,
    status         text        NOT NULL DEFAULT 'offline',
    site           text        NOT NULL DEFAULT '',
    version        text        NOT NULL DEFAULT '',
    hostname       text        NOT NULL DEFAULT '',
    os             text        NOT NULL DEFAULT '',
    arch           text        NOT NULL DEFAULT '',
    capabilities   jsonb       NOT NULL DEFAULT '[]',
    labels         jsonb       NOT NULL DEFAULT '{}',
    gateway_id     text        NOT NULL DEFAULT '',
    session_id     text        NOT NULL DEFAULT '',
    health_status  text        NOT NULL DEFAULT '',
    uptime_s       bigint      NOT NULL DEFAULT 0,
    connected_at   timestamptz,
    last_seen_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_status_idx ON agents (status, id);

CREATE TABLE commands (
    id              text PRIMARY KEY,
    verb            text        NOT NULL,
    args            jsonb       NOT NULL DEFAULT '{}',
    priority        smallint    NOT NULL DEFAULT 1,
    status          text        NOT NULL,
    created_by      text        NOT NULL,
    timeout_seconds integer     NOT NULL,
    max_retries     integer     NOT NULL,
    ttl_seconds     integer     NOT NULL,
    mode            text        NOT NULL DEFAULT 'all',
    targeting       jsonb       NOT NULL DEFAULT '{}',
    max_concurrency integer     NOT NULL DEFAULT 0,
    max_errors      integer,
    cancelled_by    text        NOT NULL DEFAULT '',
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX commands_created_idx ON commands (created_at DESC, id DESC);
CREATE INDEX commands_finished_idx ON commands (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE executions (
    id              text PRIMARY KEY,
    command_id      text        NOT NULL REFERENCES commands (id) ON DELETE CASCADE,
    agent_id        text        NOT NULL,
    status          text        NOT NULL,
    priority        smallint    NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ack_deadline    timestamptz,
    deadline_at     timestamptz,
    gateway_id      text        NOT NULL DEFAULT '',
    exit_code       integer,
    output          text        NOT NULL DEFAULT '',
    error           text        NOT NULL DEFAULT '',
    dispatched_at   timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (command_id, agent_id)
);
-- The claim query walks this partial index: highest priority first, FIFO within one.
CREATE INDEX executions_due_idx ON executions (priority DESC, created_at, id) WHERE status IN ('queued', 'retrying');
CREATE INDEX executions_inflight_idx ON executions (deadline_at) WHERE status IN ('dispatched', 'running');
CREATE INDEX executions_ack_idx ON executions (ack_deadline) WHERE status = 'dispatched';
CREATE INDEX executions_agent_idx ON executions (agent_id, status);

CREATE TABLE telemetry (
    agent_id    text        NOT NULL,
    ts          timestamptz NOT NULL,
    metrics     jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX telemetry_agent_ts_idx ON telemetry (agent_id, ts DESC);
CREATE INDEX telemetry_ts_idx ON telemetry (ts);

CREATE TABLE audit_events (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text        NOT NULL DEFAULT '',
    request_id text        NOT NULL DEFAULT '',
    details    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at_idx ON audit_events (at DESC);

-- Public halves of the command signing keys, announced by gateways in WELCOME.
CREATE TABLE signing_keys (
    key_id     text PRIMARY KEY,
    public_key text        NOT NULL,
    created_at timestamptz NOT NULL
);
