-- Users are created on first sight of an identity-provider subject.
CREATE TABLE users (
    id              uuid PRIMARY KEY,
    subject         text NOT NULL UNIQUE,
    email           text NOT NULL,
    email_verified  boolean NOT NULL DEFAULT false,
    display_name    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    id                     uuid PRIMARY KEY,
    slug                   text NOT NULL UNIQUE
        CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$' AND slug NOT LIKE '%--%'),
    display_name           text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    description            text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    contact_email          text NOT NULL DEFAULT '',
    pending_contact_email  text,
    -- Set for a user's personal organization: at most one per user.
    personal_owner_id      uuid UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    -- Bumped by every change; the etag is derived from it.
    revision               bigint NOT NULL DEFAULT 1,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    deleted_at             timestamptz,
    purge_at               timestamptz,
    CHECK ((deleted_at IS NULL) = (purge_at IS NULL)),
    -- A personal organization can never be deleted.
    CHECK (personal_owner_id IS NULL OR deleted_at IS NULL)
);
CREATE INDEX organizations_purge_at ON organizations (purge_at) WHERE purge_at IS NOT NULL;

-- Permissions and roles are data: later features add rows, not code paths.
CREATE TABLE permissions (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z]+\.[a-z_]+$'),
    description  text NOT NULL
);

CREATE TABLE roles (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z_]+$'),
    description  text NOT NULL
);

CREATE TABLE role_permissions (
    role        text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    permission  text NOT NULL REFERENCES permissions (name) ON DELETE CASCADE,
    PRIMARY KEY (role, permission)
);

CREATE TABLE memberships (
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, created_at);

CREATE TABLE membership_roles (
    org_id   uuid NOT NULL,
    user_id  uuid NOT NULL,
    role     text NOT NULL REFERENCES roles (name),
    PRIMARY KEY (org_id, user_id, role),
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id) ON DELETE CASCADE
);

-- Individual permissions granted to a member beyond their roles.
CREATE TABLE membership_permissions (
    org_id      uuid NOT NULL,
    user_id     uuid NOT NULL,
    permission  text NOT NULL REFERENCES permissions (name),
    PRIMARY KEY (org_id, user_id, permission),
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id) ON DELETE CASCADE
);

-- A personal organization has exactly one member: its owner.
CREATE FUNCTION memberships_personal_single_member() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM organizations
               WHERE id = NEW.org_id AND personal_owner_id IS NOT NULL
                 AND personal_owner_id <> NEW.user_id) THEN
        RAISE EXCEPTION 'a personal organization has only its owner as member'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'personal_org_single_member';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER memberships_personal_single_member
    BEFORE INSERT OR UPDATE ON memberships
    FOR EACH ROW EXECUTE FUNCTION memberships_personal_single_member();

-- Resources other services create in an organization; deletion checks this registry.
CREATE TABLE org_resources (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind         text NOT NULL,
    external_id  text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, external_id)
);
CREATE INDEX org_resources_org ON org_resources (org_id);

-- Pending contact-email changes; only the token's hash is stored.
CREATE TABLE contact_email_verifications (
    token_hash  bytea PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contact_email_verifications_org ON contact_email_verifications (org_id);

-- Transactional outbox: messages are queued in the transaction of the change
-- that causes them and delivered afterwards.
CREATE TABLE outbox_messages (
    id            uuid PRIMARY KEY,
    recipient     text NOT NULL,
    subject       text NOT NULL,
    body          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX outbox_messages_pending ON outbox_messages (created_at) WHERE delivered_at IS NULL;

-- Audit trail: one row per mutation, written in the mutation's transaction.
-- No foreign keys, so the trail outlives purged organizations and users.
CREATE TABLE activity (
    id             uuid PRIMARY KEY,
    org_id         uuid,
    actor_user_id  uuid,
    actor          text NOT NULL,
    action         text NOT NULL,
    target         text NOT NULL,
    request_id     text NOT NULL,
    details        jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activity_org_time ON activity (org_id, created_at DESC);

INSERT INTO permissions (name, description) VALUES
    ('org.read',          'See the organization'),
    ('org.update',        'Change the organization''s name, slug, description and contact email'),
    ('org.delete',        'Delete and restore the organization'),
    ('org.transfer',      'Transfer ownership of the organization'),
    ('members.read',      'See members and invitations'),
    ('members.manage',    'Invite, remove and change the roles of members'),
    ('billing.read',      'See billing profile, payment methods and invoices'),
    ('billing.manage',    'Change billing profile and payment methods'),
    ('plans.manage',      'Change the subscription plan'),
    ('subscription.read', 'See the subscription plan'),
    ('projects.create',   'Create projects and resources'),
    ('activity.read',     'See the activity log'),
    ('tokens.manage',     'Create and revoke API tokens');

INSERT INTO roles (name, description) VALUES
    ('owner',     'Everything, including deletion and ownership transfer'),
    ('admin',     'Everything but deletion and ownership transfer'),
    ('billing',   'Read the organization, manage billing and plans'),
    ('developer', 'Read the organization, its members and subscription; create projects'),
    ('viewer',    'Read the organization, its members and subscription');

INSERT INTO role_permissions (role, permission)
SELECT 'owner', name FROM permissions;
INSERT INTO role_permissions (role, permission)
SELECT 'admin', name FROM permissions WHERE name NOT IN ('org.delete', 'org.transfer');
INSERT INTO role_permissions (role, permission) VALUES
    ('billing', 'org.read'), ('billing', 'members.read'), ('billing', 'subscription.read'),
    ('billing', 'billing.read'), ('billing', 'billing.manage'), ('billing', 'plans.manage'),
    ('developer', 'org.read'), ('developer', 'members.read'), ('developer', 'subscription.read'),
    ('developer', 'projects.create'),
    ('viewer', 'org.read'), ('viewer', 'members.read'), ('viewer', 'subscription.read');
