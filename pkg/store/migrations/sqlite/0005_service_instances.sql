-- 0005: liveness of service processes (SQLite twin of postgres/0005).
CREATE TABLE service_instances (
    role         TEXT     NOT NULL,
    id           TEXT     NOT NULL,
    version      TEXT     NOT NULL DEFAULT '',
    hostname     TEXT     NOT NULL DEFAULT '',
    leader       INTEGER  NOT NULL DEFAULT 0,
    started_at   DATETIME NOT NULL,
    last_seen_at DATETIME NOT NULL,
    PRIMARY KEY (role, id)
);
CREATE INDEX service_instances_seen_idx ON service_instances (last_seen_at);

CREATE INDEX executions_dispatched_idx ON executions (dispatched_at) WHERE dispatched_at IS NOT NULL;
