-- 0005: liveness of service processes (for GET /api/v1/status), and indexes
-- for the dispatch latency of the API summary (GET /api/v1/metrics).
CREATE TABLE service_instances (
    role         text        NOT NULL,  -- api-server, agent-gateway, scheduler
    id           text        NOT NULL,  -- instance id (a gateway's id is its agents' gateway_id)
    version      text        NOT NULL DEFAULT '',
    hostname     text        NOT NULL DEFAULT '',
    leader       boolean     NOT NULL DEFAULT false, -- a scheduler holding the maintenance lease
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (role, id)
);
CREATE INDEX service_instances_seen_idx ON service_instances (last_seen_at);

CREATE INDEX executions_dispatched_idx ON executions (dispatched_at) WHERE dispatched_at IS NOT NULL;
