-- Members create, list and revoke their own API tokens (as on Koyeb);
-- `tokens.manage` governs everyone's, their own included. The trigger of
-- permission_implications adds `tokens.create_own` => `org.read`.
INSERT INTO permissions (name, description) VALUES
    ('tokens.create_own', 'Create, list and revoke one''s own API tokens');
INSERT INTO role_permissions (role, permission) VALUES
    ('owner', 'tokens.create_own'), ('admin', 'tokens.create_own'),
    ('developer', 'tokens.create_own');
INSERT INTO permission_implications (permission, implies) VALUES
    ('tokens.manage', 'tokens.create_own');

-- A member without `tokens.manage` lists their own tokens only.
CREATE INDEX api_tokens_creator ON api_tokens (org_id, creator_id, created_at, id);
