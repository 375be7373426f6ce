-- 0004: tamper-evident audit trail, API keys, enrollment secrets, idempotency keys.
--
-- Audit hash chain: every row written from this version on carries prev_hash
-- (the hash of the row before it) and hash (SHA-256 over the row's canonical
-- encoding, see store.AuditEvent.ComputeHash). Rows written before this
-- migration keep hash = '' and form an unchained prefix: the chain starts after
-- them (VerifyAudit counts them as "unchained" and refuses an unhashed row
-- after the first hashed one). Rows are append-only: UPDATE, DELETE and
-- TRUNCATE are refused by triggers.
ALTER TABLE audit_events
    ADD COLUMN client_ip text NOT NULL DEFAULT '',
    ADD COLUMN prev_hash text NOT NULL DEFAULT '',
    ADD COLUMN hash      text NOT NULL DEFAULT '';
CREATE INDEX audit_events_actor_idx ON audit_events (actor, id);
CREATE INDEX audit_events_action_idx ON audit_events (action, id);
CREATE INDEX audit_events_target_idx ON audit_events (target, id);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- API keys: exchanged for short-lived JWTs at POST /api/v1/auth/token.
CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL,
    key_hash   text        NOT NULL UNIQUE,
    prefix     text        NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_created_idx ON api_keys (created_at, id);

-- Enrollment secrets: issued by admins, exchanged by agents for credentials.
CREATE TABLE enrollment_secrets (
    id          text PRIMARY KEY,
    name        text        NOT NULL,
    secret_hash text        NOT NULL UNIQUE,
    site        text        NOT NULL DEFAULT '',
    labels      jsonb       NOT NULL DEFAULT '{}',
    max_uses    integer,
    uses        integer     NOT NULL DEFAULT 0,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX enrollment_secrets_created_idx ON enrollment_secrets (created_at, id);

-- Site and labels imposed by the enrollment secret an agent enrolled with; they
-- win over what the agent claims in HELLO. NULL: nothing imposed.
ALTER TABLE agent_credentials
    ADD COLUMN imposed_site   text,
    ADD COLUMN imposed_labels jsonb;

-- Idempotency keys of POST /commands, kept 24 h.
CREATE TABLE idempotency_keys (
    principal    text        NOT NULL,
    idem_key     text        NOT NULL,
    request_hash text        NOT NULL,
    status_code  integer     NOT NULL DEFAULT 0, -- 0: in flight
    response     bytea,
    location     text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (principal, idem_key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
