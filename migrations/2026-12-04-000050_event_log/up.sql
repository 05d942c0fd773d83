-- The change feed (src/store/events.rs): one event per change, written by
-- audit::record in the change's own transaction, beside its activity row.
--
-- An event's place in the feed is (txid, position): the id of the transaction
-- that wrote it, then a sequence for the events of one transaction. Readers
-- hand out only events whose transaction id is below the xmin of their
-- snapshot (pg_current_snapshot()): every transaction below it has ended, and
-- every transaction still to commit has an id at or above it, so no event can
-- later appear before a cursor already handed out. A sequence alone would not
-- do: a transaction that took a lower number could commit after a reader had
-- moved past it.
CREATE TABLE events (
    txid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    position    bigint GENERATED ALWAYS AS IDENTITY,
    id          uuid NOT NULL UNIQUE,
    type        text NOT NULL,
    org_id      uuid,
    subject     text NOT NULL,
    actor       text NOT NULL,
    request_id  text NOT NULL,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (txid, position)
);
-- A member's feed (and a service's filtered to some organizations).
CREATE INDEX events_org_order ON events (org_id, txid, position);
-- Retention deletes the oldest.
CREATE INDEX events_created_at ON events (created_at);

-- Where retention has deleted up to: a cursor before it is OUT_OF_RANGE.
CREATE TABLE event_retention (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    purged_txid      xid8 NOT NULL DEFAULT '0',
    purged_position  bigint NOT NULL DEFAULT 0
);
INSERT INTO event_retention DEFAULT VALUES;

-- Wakes the streams waiting for events (WatchEvents) when a writer commits.
-- Only a hint: readers also look on their own now and then, and never rely on
-- it for what they hand out.
CREATE FUNCTION notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orgd_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events();
