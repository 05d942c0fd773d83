ALTER TABLE billing_email_verifications DROP COLUMN permission, DROP COLUMN requested_by;
ALTER TABLE contact_email_verifications DROP COLUMN permission, DROP COLUMN requested_by;
