-- A pending contact- or billing-email change names who asked for it and the
-- permission that let them: it holds only while they still hold it, so that a
-- member removed (or demoted) after asking cannot finish it. Changes pending
-- from before name nobody and are cancelled; whoever wants them asks again.
UPDATE organizations SET pending_contact_email = NULL,
                         revision = revision + 1, updated_at = now()
 WHERE pending_contact_email IS NOT NULL;
DELETE FROM contact_email_verifications;
UPDATE billing_profiles SET pending_billing_email = NULL,
                            revision = revision + 1, updated_at = now()
 WHERE pending_billing_email IS NOT NULL;
DELETE FROM billing_email_verifications;

ALTER TABLE contact_email_verifications
    ADD COLUMN requested_by uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ADD COLUMN permission text NOT NULL REFERENCES permissions (name);
ALTER TABLE billing_email_verifications
    ADD COLUMN requested_by uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    ADD COLUMN permission text NOT NULL REFERENCES permissions (name);
