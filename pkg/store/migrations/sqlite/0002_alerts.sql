-- 0002: alert rules, alerts, webhooks and the webhook delivery log (SQLite twin
-- of postgres/0002). Times are written by the application in UTC; no defaults.
CREATE TABLE alert_rules (
    id         TEXT PRIMARY KEY,
    name       TEXT     NOT NULL UNIQUE,
    kind       TEXT     NOT NULL,
    params     TEXT     NOT NULL DEFAULT '{}',
    enabled    INTEGER  NOT NULL DEFAULT 1,
    created_by TEXT     NOT NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL
);
CREATE INDEX alert_rules_created_idx ON alert_rules (created_at, id);

CREATE TABLE alerts (
    id          TEXT PRIMARY KEY,
    rule_id     TEXT     NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    rule_name   TEXT     NOT NULL,
    kind        TEXT     NOT NULL,
    subject     TEXT     NOT NULL,
    details     TEXT     NOT NULL DEFAULT '{}',
    fired_at    DATETIME NOT NULL,
    resolved_at DATETIME
);
CREATE UNIQUE INDEX alerts_open_uidx ON alerts (rule_id, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_fired_idx ON alerts (fired_at DESC, id DESC);
CREATE INDEX alerts_rule_fired_idx ON alerts (rule_id, fired_at DESC, id DESC);
CREATE INDEX alerts_resolved_idx ON alerts (resolved_at) WHERE resolved_at IS NOT NULL;

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT     NOT NULL,
    secret     TEXT     NOT NULL,
    enabled    INTEGER  NOT NULL DEFAULT 1,
    created_by TEXT     NOT NULL,
    created_at DATETIME NOT NULL
);
CREATE INDEX webhooks_created_idx ON webhooks (created_at, id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT     NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alert_id        TEXT     NOT NULL,
    event           TEXT     NOT NULL,
    payload         TEXT     NOT NULL,
    status          TEXT     NOT NULL DEFAULT 'pending',
    attempts        INTEGER  NOT NULL DEFAULT 0,
    last_error      TEXT     NOT NULL DEFAULT '',
    response_code   INTEGER,
    response_body   TEXT     NOT NULL DEFAULT '',
    claimed_until   DATETIME,
    last_attempt_at DATETIME,
    delivered_at    DATETIME,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL
);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (created_at, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_done_idx ON webhook_deliveries (updated_at) WHERE status <> 'pending';

CREATE INDEX executions_finished_idx ON executions (finished_at) WHERE finished_at IS NOT NULL;
