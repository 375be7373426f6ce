-- 0008: trusted and reported agent attributes (SQLite twin of postgres/0008).
ALTER TABLE agents ADD COLUMN reported_site TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN reported_labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN reported_capabilities TEXT NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN attributes_source TEXT NOT NULL DEFAULT '';

UPDATE agents SET reported_site = site, reported_labels = labels, reported_capabilities = capabilities;
UPDATE agents SET attributes_source = 'enrollment'
    WHERE EXISTS (SELECT 1 FROM agent_credentials AS c
                  WHERE c.agent_id = agents.id AND c.revoked_at IS NULL AND c.imposed_site IS NOT NULL);
UPDATE agents SET site = '', labels = '{}' WHERE attributes_source = '';

ALTER TABLE enrollment_secrets ADD COLUMN allowed_capabilities TEXT;
ALTER TABLE agent_credentials ADD COLUMN allowed_capabilities TEXT;
