DROP INDEX users_verified_email;
CREATE INDEX users_email_lower ON users (lower(email)) WHERE email_verified;

ALTER TABLE invitations DROP CONSTRAINT invitations_email_check;
ALTER TABLE invitations ADD CONSTRAINT invitations_email_check
    CHECK (email = lower(email) AND email LIKE '%_@_%');
