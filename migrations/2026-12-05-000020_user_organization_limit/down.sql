ALTER TABLE users DROP COLUMN organization_limit;
