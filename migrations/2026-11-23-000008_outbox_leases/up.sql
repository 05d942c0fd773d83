-- Delivery claims due messages with a lease and commits before it talks to the
-- SMTP server: no row lock or transaction is held while mail is sent. Only the
-- holder of the lease (lease_id) records the outcome; a lease that runs out
-- (its holder crashed or lost the database) makes the message due again.
ALTER TABLE outbox_messages
    ADD COLUMN lease_id uuid,
    ADD COLUMN leased_until timestamptz,
    ADD CONSTRAINT outbox_messages_lease_whole
        CHECK ((lease_id IS NULL) = (leased_until IS NULL)),
    ADD CONSTRAINT outbox_messages_lease_only_while_pending
        CHECK (lease_id IS NULL OR (delivered_at IS NULL AND failed_at IS NULL));

-- A message is due once its next attempt is and no lease holds it: GREATEST
-- ignores NULLs, so this is next_attempt_at for an unleased message and the
-- later of the two for a leased one. Claiming scans it in order.
DROP INDEX outbox_messages_due;
CREATE INDEX outbox_messages_due ON outbox_messages ((GREATEST(next_attempt_at, leased_until)))
    WHERE delivered_at IS NULL AND failed_at IS NULL;
