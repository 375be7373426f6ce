-- 0009: keyed audit chain and its start. See the Postgres migration; SQLite
-- has no roles (the all-in-one's file belongs to its process).
ALTER TABLE audit_events ADD COLUMN key_id TEXT NOT NULL DEFAULT '';

CREATE TABLE audit_chain (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    keyed_from INTEGER  NOT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO audit_chain (singleton, keyed_from) SELECT 1, coalesce(max(id), 0) + 1 FROM audit_events;

CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain
BEGIN
    SELECT RAISE(ABORT, 'audit_chain is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain
BEGIN
    SELECT RAISE(ABORT, 'audit_chain is append-only: DELETE refused');
END;
