-- 0003: per-agent credentials obtained by enrolling (stored only as a hash).
CREATE TABLE agent_credentials (
    agent_id        TEXT PRIMARY KEY,
    credential_hash TEXT     NOT NULL UNIQUE,
    enrolled_at     DATETIME NOT NULL,
    enrolled_from   TEXT     NOT NULL DEFAULT '',
    revoked_at      DATETIME
);
