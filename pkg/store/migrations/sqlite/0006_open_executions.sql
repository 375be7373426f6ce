-- 0006: the executions of a command that have not finished, found without
-- reading its finished ones: recording a result of a large fan-out asks only
-- whether any remain open (the aggregate status stays "running" while they do).
CREATE INDEX executions_open_idx ON executions (command_id)
    WHERE status IN ('queued', 'dispatched', 'running', 'retrying');

-- Unfinished commands, for the sweep that repairs an aggregate left behind.
CREATE INDEX commands_unfinished_idx ON commands (created_at) WHERE finished_at IS NULL;
