-- Outbox delivery with retries: failed sends are retried with backoff until
-- they are delivered or given up on for good (failed_at).
ALTER TABLE outbox_messages
    ADD COLUMN attempts int NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_error text,
    ADD COLUMN failed_at timestamptz,
    ADD CONSTRAINT outbox_messages_delivered_or_failed
        CHECK (delivered_at IS NULL OR failed_at IS NULL);

-- The worker asks for due messages that are neither delivered nor failed.
DROP INDEX outbox_messages_pending;
CREATE INDEX outbox_messages_due ON outbox_messages (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
