-- 0011: commands whose args hold encrypted secret values (sealed by the API
-- server). Once a command is final the scheduler's leader purges them: the
-- ciphertexts are replaced by a "purged" marker and the flag is cleared.
ALTER TABLE commands ADD COLUMN args_sealed BOOLEAN NOT NULL DEFAULT FALSE;

CREATE INDEX commands_args_sealed_idx ON commands (finished_at) WHERE args_sealed;
