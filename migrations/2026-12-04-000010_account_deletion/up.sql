-- Account deletion. The user's row stays as a tombstone: its identity-provider
-- subject is detached (a later sign-in with it starts a fresh user) and its
-- profile erased, while the API tokens it created still name it (they read as
-- deactivated) and the activity trail keeps its id. The tombstone goes when
-- its personal organization is purged.
ALTER TABLE users
    ALTER COLUMN subject DROP NOT NULL,
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT users_deleted_detached CHECK ((deleted_at IS NULL) = (subject IS NOT NULL));

-- A personal organization was never deleted; now it is closed with its user's
-- account, and only then. The old CHECK could not look at the user.
DO $$
DECLARE
    personal_check text;
BEGIN
    SELECT conname INTO STRICT personal_check FROM pg_constraint
     WHERE conrelid = 'organizations'::regclass AND contype = 'c'
       AND pg_get_constraintdef(oid) LIKE '%personal_owner_id%';
    EXECUTE format('ALTER TABLE organizations DROP CONSTRAINT %I', personal_check);
END $$;

CREATE FUNCTION organizations_personal_closed_with_account() RETURNS trigger AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM users
                   WHERE id = NEW.personal_owner_id AND deleted_at IS NOT NULL) THEN
        RAISE EXCEPTION 'a personal organization is deleted only with its user''s account'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'personal_org_closed_with_account';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER organizations_personal_closed_with_account
    BEFORE INSERT OR UPDATE ON organizations
    FOR EACH ROW WHEN (NEW.personal_owner_id IS NOT NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION organizations_personal_closed_with_account();

-- Every live organization keeps at least one owner. A deleted one may lose its
-- last with that owner's account (a personal one always does), and is then
-- purged in time; it cannot be restored without an owner.
CREATE OR REPLACE FUNCTION organizations_keep_an_owner() RETURNS trigger AS $$
BEGIN
    UPDATE organizations SET revision = revision
     WHERE id = OLD.org_id AND deleted_at IS NULL;
    IF FOUND AND NOT EXISTS (SELECT 1 FROM membership_roles
                             WHERE org_id = OLD.org_id AND role = 'owner') THEN
        RAISE EXCEPTION 'organization % would be left without an owner', OLD.org_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organization_has_owner';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION organizations_restore_an_owner() RETURNS trigger AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM membership_roles WHERE org_id = NEW.id AND role = 'owner') THEN
        RAISE EXCEPTION 'organization % has no owner and cannot be restored', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organization_restored_with_owner';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER organization_restored_with_owner
    AFTER UPDATE OF deleted_at ON organizations
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL)
    EXECUTE FUNCTION organizations_restore_an_owner();
