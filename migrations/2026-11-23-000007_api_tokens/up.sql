-- Backend services ask "may user U do P here?" with an API token holding this.
INSERT INTO permissions (name, description) VALUES
    ('permissions.check', 'Ask whether any member may do something in the organization (for backend services)');
INSERT INTO role_permissions (role, permission) VALUES
    ('owner', 'permissions.check'), ('admin', 'permissions.check');

-- Organization-scoped API tokens. The secret is shown once; only its SHA-256 is
-- kept. A token acts as its creator, within its own grant and the creator's
-- current standing in the organization (checked on every call).
CREATE TABLE api_tokens (
    id                 uuid PRIMARY KEY,
    org_id             uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    creator_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    display_name       text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    -- The first characters of the secret, so people can tell tokens apart.
    prefix             text NOT NULL,
    secret_hash        bytea NOT NULL UNIQUE,
    roles              text[] NOT NULL,
    extra_permissions  text[] NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    last_used_at       timestamptz,
    revoked_at         timestamptz,
    CHECK (cardinality(roles) + cardinality(extra_permissions) > 0)
);
CREATE INDEX api_tokens_org ON api_tokens (org_id, created_at, id);
