DROP TABLE api_tokens;
DELETE FROM role_permissions WHERE permission = 'permissions.check';
DELETE FROM permissions WHERE name = 'permissions.check';
