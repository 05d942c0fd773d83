DROP TRIGGER organization_has_owner ON membership_roles;
DROP FUNCTION organizations_keep_an_owner();
DROP INDEX users_email_lower;
DROP INDEX memberships_org;
DROP TABLE invitations;
ALTER TABLE memberships DROP COLUMN invited_by, DROP COLUMN revision, DROP COLUMN updated_at;
