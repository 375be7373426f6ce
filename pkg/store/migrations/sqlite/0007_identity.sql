-- 0007: agent identity is a boundary (see the Postgres migration).
ALTER TABLE agent_credentials ADD COLUMN enroll_blocked BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE agent_credentials ADD COLUMN created_with TEXT NOT NULL DEFAULT '';

ALTER TABLE enrollment_secrets ADD COLUMN agent_id_pattern TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollment_secrets ADD COLUMN max_agents INTEGER;
ALTER TABLE enrollment_secrets ADD COLUMN agents INTEGER NOT NULL DEFAULT 0;

CREATE TABLE enrollment_counters (
    source TEXT    PRIMARY KEY,
    agents INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE reenroll_secrets (
    agent_id    TEXT PRIMARY KEY,
    secret_hash TEXT     NOT NULL UNIQUE,
    created_by  TEXT     NOT NULL,
    created_at  DATETIME NOT NULL,
    expires_at  DATETIME NOT NULL
);
