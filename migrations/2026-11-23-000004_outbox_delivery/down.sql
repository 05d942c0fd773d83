DROP INDEX outbox_messages_due;
ALTER TABLE outbox_messages
    DROP CONSTRAINT outbox_messages_delivered_or_failed,
    DROP COLUMN failed_at,
    DROP COLUMN last_error,
    DROP COLUMN next_attempt_at,
    DROP COLUMN attempts;
CREATE INDEX outbox_messages_pending ON outbox_messages (created_at) WHERE delivered_at IS NULL;
