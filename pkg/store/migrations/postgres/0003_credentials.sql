-- 0003: per-agent credentials obtained by enrolling (stored only as a hash).
CREATE TABLE agent_credentials (
    agent_id        text PRIMARY KEY,
    credential_hash text        NOT NULL UNIQUE,
    enrolled_at     timestamptz NOT NULL,
    enrolled_from   text        NOT NULL DEFAULT '',
    revoked_at      timestamptz
);
