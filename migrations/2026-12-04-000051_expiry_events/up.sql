-- Invitations and API tokens expire by the clock, with no change to their row;
-- the change feed still tells when (orgd.invitation.expired.v1,
-- orgd.api_token.expired.v1). A background round (src/store/expiries.rs)
-- records each expiry once, marking the row in the event's transaction.
-- What had expired before this migration is marked now, without an event.
ALTER TABLE invitations ADD COLUMN expiry_recorded_at timestamptz;
UPDATE invitations SET expiry_recorded_at = now() WHERE expires_at <= now();
CREATE INDEX invitations_expiry_due ON invitations (expires_at)
    WHERE state = 'pending' AND expiry_recorded_at IS NULL;

ALTER TABLE api_tokens ADD COLUMN expiry_recorded_at timestamptz;
UPDATE api_tokens SET expiry_recorded_at = now() WHERE expires_at <= now();
CREATE INDEX api_tokens_expiry_due ON api_tokens (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL AND expiry_recorded_at IS NULL;
