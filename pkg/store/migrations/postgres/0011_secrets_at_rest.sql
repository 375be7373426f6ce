-- 0011: secrets at rest.
--
-- Commands whose args hold encrypted secret values (sealed by the API
-- server). Once a command is final the scheduler's leader purges them: the
-- ciphertexts are replaced by a "purged" marker and the flag is cleared.
ALTER TABLE commands ADD COLUMN args_sealed BOOLEAN NOT NULL DEFAULT FALSE;

CREATE INDEX commands_args_sealed_idx ON commands (finished_at) WHERE args_sealed;

-- The size of a receiver's answer (bytes read, up to 64 KiB): its body is
-- kept only when alerts.webhook_store_response_body is set.
ALTER TABLE webhook_deliveries ADD COLUMN response_bytes BIGINT;
