-- 0008: trusted and reported agent attributes. agents.site, labels and
-- capabilities are what selectors and the agent list filters match: site and
-- labels are fixed at enrollment (an enrollment secret's) or set by an admin,
-- capabilities are what the agent announced within what its enrollment secret
-- allows. What an agent claims in HELLO is kept in the reported_* columns.
ALTER TABLE agents
    ADD COLUMN reported_site         text  NOT NULL DEFAULT '',
    ADD COLUMN reported_labels       jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN reported_capabilities jsonb NOT NULL DEFAULT '[]',
    -- Who set site and labels: '' nothing (site '' and no labels),
    -- 'enrollment' an enrollment secret, 'admin' PATCH /agents/{id},
    -- 'reported' the agent's HELLO (only with trust_reported_attributes).
    ADD COLUMN attributes_source     text  NOT NULL DEFAULT '';

-- Until now HELLO's claims were taken as trusted: keep them as reported, keep
-- as trusted only what an enrollment secret imposed.
UPDATE agents SET reported_site = site, reported_labels = labels, reported_capabilities = capabilities;
UPDATE agents AS a SET attributes_source = 'enrollment'
    FROM agent_credentials AS c
    WHERE c.agent_id = a.id AND c.revoked_at IS NULL AND c.imposed_site IS NOT NULL;
UPDATE agents SET site = '', labels = '{}' WHERE attributes_source = '';

-- Capabilities an enrollment secret allows its agents to be targeted for;
-- NULL: any. Carried onto the credential like the imposed site and labels.
ALTER TABLE enrollment_secrets ADD COLUMN allowed_capabilities jsonb;
ALTER TABLE agent_credentials ADD COLUMN allowed_capabilities jsonb;
