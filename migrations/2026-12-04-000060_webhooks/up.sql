-- Webhooks (src/store/webhooks.rs, webhook_delivery.rs): endpoints that the
-- change feed's events are POSTed to, each following the feed from a cursor
-- of its own, and every delivery attempt.

-- Managing an organization's endpoints; the trigger of permission_implications
-- adds `webhooks.manage` => `org.read`.
INSERT INTO permissions (name, description) VALUES
    ('webhooks.manage', 'Register, change and remove webhook endpoints and see their deliveries');
INSERT INTO role_permissions (role, permission) VALUES
    ('owner', 'webhooks.manage'), ('admin', 'webhooks.manage');

CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY,
    -- An organization's endpoint, or (NULL) a backend service's, which
    -- receives every organization's events or those of `org_filter`.
    org_id           uuid REFERENCES organizations (id) ON DELETE CASCADE,
    service          text,
    org_filter       uuid[],
    CONSTRAINT webhook_endpoints_one_owner CHECK ((org_id IS NULL) = (service IS NOT NULL)),
    CONSTRAINT webhook_endpoints_org_filter_for_services CHECK (org_id IS NULL OR org_filter IS NULL),
    url              text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description      text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    type_prefixes    text[] NOT NULL DEFAULT '{}',
    -- The signing secret's 32 bytes, AES-256-GCM encrypted (nonce, then
    -- ciphertext and tag) under the key whose fingerprint is `key_id`.
    secret_sealed    bytea NOT NULL,
    key_id           text NOT NULL,
    creator          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Delivered up to here in the feed (a Cursor of src/store/events.rs).
    cursor_txid      xid8 NOT NULL,
    cursor_position  bigint NOT NULL,
    -- Failed attempts in a row, and when the next one is due.
    failures         integer NOT NULL DEFAULT 0,
    retry_at         timestamptz NOT NULL DEFAULT now(),
    disabled_at      timestamptz,
    disabled_reason  text,
    CONSTRAINT webhook_endpoints_disabled_whole CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL)),
    -- A delivery round holds the endpoint while it sends (as outbox_messages).
    lease_id         uuid,
    leased_until     timestamptz,
    CONSTRAINT webhook_endpoints_lease_whole CHECK ((lease_id IS NULL) = (leased_until IS NULL))
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id, created_at, id);
CREATE INDEX webhook_endpoints_service ON webhook_endpoints (service, created_at, id)
    WHERE service IS NOT NULL;
CREATE INDEX webhook_endpoints_due ON webhook_endpoints (retry_at) WHERE disabled_at IS NULL;

-- Events RedeliverEvent queued, sent ahead of the endpoint's cursor.
CREATE TABLE webhook_redeliveries (
    endpoint_id   uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id      uuid NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, event_id)
);

-- Every attempt, kept as long as events are (--event-retention).
CREATE TABLE webhook_deliveries (
    id            uuid PRIMARY KEY,
    endpoint_id   uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    attempt       integer NOT NULL CHECK (attempt > 0),
    redelivery    boolean NOT NULL,
    attempted_at  timestamptz NOT NULL,
    duration_ms   integer NOT NULL CHECK (duration_ms >= 0),
    http_status   integer,
    error         text,
    CONSTRAINT webhook_deliveries_outcome CHECK (http_status IS NOT NULL OR error IS NOT NULL)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, attempted_at DESC, id DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (endpoint_id, event_id);
CREATE INDEX webhook_deliveries_attempted_at ON webhook_deliveries (attempted_at);
