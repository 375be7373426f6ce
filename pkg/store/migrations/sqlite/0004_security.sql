-- 0004: tamper-evident audit trail, API keys, enrollment secrets, idempotency
-- keys. See the Postgres migration for the design; rows written before this
-- migration keep hash = '' (an unchained prefix).
ALTER TABLE audit_events ADD COLUMN client_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN hash      TEXT NOT NULL DEFAULT '';
CREATE INDEX audit_events_actor_idx ON audit_events (actor, id);
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
CREATE INDEX audit_events_target_idx ON audit_events (target, id);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
END;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT     NOT NULL,
    role         TEXT     NOT NULL,
    key_hash     TEXT     NOT NULL UNIQUE,
    prefix       TEXT     NOT NULL,
    created_by   TEXT     NOT NULL,
    created_at   DATETIME NOT NULL,
    expires_at   DATETIME,
    revoked_at   DATETIME,
    last_used_at DATETIME
);
CREATE INDEX api_keys_created_idx ON api_keys (created_at, id);

CREATE TABLE enrollment_secrets (
    id          TEXT PRIMARY KEY,
    name        TEXT     NOT NULL,
    secret_hash TEXT     NOT NULL UNIQUE,
    site        TEXT     NOT NULL DEFAULT '',
    labels      TEXT     NOT NULL DEFAULT '{}',
    max_uses    INTEGER,
    uses        INTEGER  NOT NULL DEFAULT 0,
    created_by  TEXT     NOT NULL,
    created_at  DATETIME NOT NULL,
    expires_at  DATETIME,
    revoked_at  DATETIME
);
CREATE INDEX enrollment_secrets_created_idx ON enrollment_secrets (created_at, id);

ALTER TABLE agent_credentials ADD COLUMN imposed_site TEXT;
ALTER TABLE agent_credentials ADD COLUMN imposed_labels TEXT;

CREATE TABLE idempotency_keys (
    principal    TEXT     NOT NULL,
    idem_key     TEXT     NOT NULL,
    request_hash TEXT     NOT NULL,
    status_code  INTEGER  NOT NULL DEFAULT 0,
    response     BLOB,
    location     TEXT     NOT NULL DEFAULT '',
    created_at   DATETIME NOT NULL,
    expires_at   DATETIME NOT NULL,
    PRIMARY KEY (principal, idem_key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
