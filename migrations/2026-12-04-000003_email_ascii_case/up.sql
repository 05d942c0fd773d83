-- Email addresses are folded to lower case in ASCII only (orgd does it before
-- storing them), never with Unicode's full case mapping: otherwise a verified
-- 'Kate@…' written with the Kelvin sign (U+212A) would become kate's address.
-- COLLATE "C" keeps PostgreSQL's lower() to ASCII whatever the database's locale.
ALTER TABLE invitations DROP CONSTRAINT invitations_email_check;
ALTER TABLE invitations ADD CONSTRAINT invitations_email_check
    CHECK (email = lower(email COLLATE "C") AND email LIKE '%_@_%');

-- Users' addresses are stored folded, so they are matched as they are.
DROP INDEX users_email_lower;
CREATE INDEX users_verified_email ON users (email) WHERE email_verified;
