-- 0007: agent identity is a boundary. Enrolling creates an identity and never
-- replaces a live one; an admin revokes (and blocks re-enrollment), issues a
-- single-use re-enrollment secret for one id, or forgets an agent.
ALTER TABLE agent_credentials
    -- Set by a revocation: enrolling this id is refused until an admin lifts it.
    ADD COLUMN enroll_blocked boolean NOT NULL DEFAULT false,
    -- What created the identity ("bootstrap" or "secret:<id>"); rotation keeps it.
    ADD COLUMN created_with   text    NOT NULL DEFAULT '';

-- Enrollment secrets may be bounded to agent ids matching a pattern and to a
-- number of distinct identities created with them.
ALTER TABLE enrollment_secrets
    ADD COLUMN agent_id_pattern text    NOT NULL DEFAULT '',
    ADD COLUMN max_agents       integer,
    ADD COLUMN agents           integer NOT NULL DEFAULT 0;

-- Identities created with the bootstrap secret (for its optional cap).
CREATE TABLE enrollment_counters (
    source text    PRIMARY KEY,
    agents integer NOT NULL DEFAULT 0
);

-- Single-use re-enrollment secrets an admin issued for one agent id (hashed).
CREATE TABLE reenroll_secrets (
    agent_id    text PRIMARY KEY,
    secret_hash text        NOT NULL UNIQUE,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
