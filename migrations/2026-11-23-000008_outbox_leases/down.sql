DROP INDEX outbox_messages_due;
CREATE INDEX outbox_messages_due ON outbox_messages (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
ALTER TABLE outbox_messages
    DROP CONSTRAINT outbox_messages_lease_only_while_pending,
    DROP CONSTRAINT outbox_messages_lease_whole,
    DROP COLUMN leased_until,
    DROP COLUMN lease_id;
