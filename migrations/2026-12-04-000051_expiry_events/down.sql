DROP INDEX api_tokens_expiry_due;
ALTER TABLE api_tokens DROP COLUMN expiry_recorded_at;
DROP INDEX invitations_expiry_due;
ALTER TABLE invitations DROP COLUMN expiry_recorded_at;
