-- Who brought a member in, and a revision for the member's etag.
ALTER TABLE memberships
    ADD COLUMN invited_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN revision    bigint NOT NULL DEFAULT 1,
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();

-- Invitations by email. The token is random and only its SHA-256 is stored;
-- resending replaces it, so the old link dies. `expired` is stored only when a
-- new invitation supersedes a lapsed pending one; a pending row past
-- `expires_at` reads as expired.
CREATE TABLE invitations (
    id                 uuid PRIMARY KEY,
    org_id             uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email              text NOT NULL CHECK (email = lower(email) AND email LIKE '%_@_%'),
    roles              text[] NOT NULL,
    extra_permissions  text[] NOT NULL,
    token_hash         bytea NOT NULL UNIQUE,
    state              text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'accepted', 'declined', 'revoked', 'expired')),
    inviter_id         uuid REFERENCES users (id) ON DELETE SET NULL,
    accepted_by        uuid REFERENCES users (id) ON DELETE SET NULL,
    send_count         integer NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    sent_at            timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    closed_at          timestamptz,
    CHECK ((state = 'pending') = (closed_at IS NULL)),
    CHECK (cardinality(roles) + cardinality(extra_permissions) > 0)
);
-- At most one pending invitation per address and organization.
CREATE UNIQUE INDEX invitations_one_pending ON invitations (org_id, email) WHERE state = 'pending';
CREATE INDEX invitations_org ON invitations (org_id, created_at, id);
CREATE INDEX invitations_pending_email ON invitations (email) WHERE state = 'pending';

CREATE INDEX memberships_org ON memberships (org_id, created_at, user_id);

-- Matching invitees and members by address is case-insensitive.
CREATE INDEX users_email_lower ON users (lower(email)) WHERE email_verified;

-- Every organization keeps at least one owner. Checked at commit, after writing
-- the organization's row: under READ COMMITTED the check then sees every
-- membership change committed before it, and under REPEATABLE READ or
-- SERIALIZABLE a concurrent change makes this write fail to serialize. So two
-- owners demoting each other at once cannot both succeed, on whichever replica
-- they run. orgd locks the row first and explains the refusal; this is the backstop.
CREATE FUNCTION organizations_keep_an_owner() RETURNS trigger AS $$
BEGIN
    UPDATE organizations SET revision = revision WHERE id = OLD.org_id;
    IF FOUND AND NOT EXISTS (SELECT 1 FROM membership_roles
                             WHERE org_id = OLD.org_id AND role = 'owner') THEN
        RAISE EXCEPTION 'organization % would be left without an owner', OLD.org_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organization_has_owner';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER organization_has_owner
    AFTER DELETE OR UPDATE ON membership_roles
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.role = 'owner')
    EXECUTE FUNCTION organizations_keep_an_owner();
