-- 0012: an execution's output that was cut to the agent protocol's output limit
-- (64 KiB) says so, for the API to show.
ALTER TABLE executions ADD COLUMN output_truncated BOOLEAN NOT NULL DEFAULT FALSE;
