-- 0009: keyed audit chain, its start, and the service role.
--
-- From this migration on, each audit row's hash is an HMAC-SHA256 under the
-- audit key (which the database never holds) named by key_id. audit_chain
-- records where the keyed chain starts: rows with a lower id are legacy (their
-- unkeyed hashes prove nothing) and every row from keyed_from on must carry a
-- keyed hash. audit_chain is append-only like audit_events.
ALTER TABLE audit_events ADD COLUMN key_id text NOT NULL DEFAULT '';

CREATE TABLE audit_chain (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    keyed_from bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_chain (keyed_from) SELECT coalesce(max(id), 0) + 1 FROM audit_events;

CREATE TRIGGER audit_chain_no_change BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- The service role: the services connect as viworks_service, which owns
-- nothing, so it cannot ALTER TABLE ... DISABLE TRIGGER or drop the triggers;
-- on the audit tables it may only SELECT and INSERT. The role is created
-- NOLOGIN when the migrating role may create roles (an operator sets its
-- password, or grants it to a login role); otherwise an operator creates it
-- (docs/audit.md) and re-runs the grants below.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'viworks_service') THEN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            BEGIN
                CREATE ROLE viworks_service NOLOGIN;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created by a concurrent migration of another database
            END;
        ELSE
            RAISE NOTICE 'role viworks_service does not exist and % may not create it; see docs/audit.md', current_user;
            RETURN;
        END IF;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO viworks_service', current_database());
    GRANT USAGE ON SCHEMA public TO viworks_service;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO viworks_service;
    GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO viworks_service;
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_chain FROM viworks_service;
    REVOKE INSERT ON audit_chain FROM viworks_service;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO viworks_service;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO viworks_service;
END
$$;
