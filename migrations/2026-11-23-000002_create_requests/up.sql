-- Idempotent CreateOrganization (AIP-155): a retried request_id returns the
-- organization its first attempt created.
CREATE TABLE create_requests (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    request_id  uuid NOT NULL,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, request_id)
);
CREATE INDEX create_requests_org ON create_requests (org_id);
