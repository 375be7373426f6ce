-- 0002: alert rules, alerts, webhooks and the webhook delivery log.
CREATE TABLE alert_rules (
    id         text PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    kind       text        NOT NULL,
    params     jsonb       NOT NULL DEFAULT '{}',
    enabled    boolean     NOT NULL DEFAULT true,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_created_idx ON alert_rules (created_at, id);

-- One row per firing of a rule for a subject (an agent id, or "global").
CREATE TABLE alerts (
    id          text PRIMARY KEY,
    rule_id     text        NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    rule_name   text        NOT NULL,
    kind        text        NOT NULL,
    subject     text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}',
    fired_at    timestamptz NOT NULL,
    resolved_at timestamptz
);
-- At most one open alert per (rule, subject): fire once, resolve once.
CREATE UNIQUE INDEX alerts_open_uidx ON alerts (rule_id, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_fired_idx ON alerts (fired_at DESC, id DESC);
CREATE INDEX alerts_rule_fired_idx ON alerts (rule_id, fired_at DESC, id DESC);
CREATE INDEX alerts_resolved_idx ON alerts (resolved_at) WHERE resolved_at IS NOT NULL;

-- The secret signs deliveries (HMAC), so it is kept as given; the API shows it once.
CREATE TABLE webhooks (
    id         text PRIMARY KEY,
    url        text        NOT NULL,
    secret     text        NOT NULL,
    enabled    boolean     NOT NULL DEFAULT true,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_created_idx ON webhooks (created_at, id);

-- One row per (alert event, webhook). alert_id has no foreign key: the log
-- outlives the alerts of a deleted rule, and the payload is kept with the row.
CREATE TABLE webhook_deliveries (
    id              text PRIMARY KEY,
    webhook_id      text        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alert_id        text        NOT NULL,
    event           text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    response_code   integer,
    response_body   text        NOT NULL DEFAULT '',
    claimed_until   timestamptz,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (created_at, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_done_idx ON webhook_deliveries (updated_at) WHERE status <> 'pending';

-- Windows of the command_failure_rate and metric_threshold rules.
CREATE INDEX executions_finished_idx ON executions (finished_at) WHERE finished_at IS NOT NULL;
