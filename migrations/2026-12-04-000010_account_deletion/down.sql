DROP TRIGGER organization_restored_with_owner ON organizations;
DROP FUNCTION organizations_restore_an_owner();

CREATE OR REPLACE FUNCTION organizations_keep_an_owner() RETURNS trigger AS $$
BEGIN
    UPDATE organizations SET revision = revision WHERE id = OLD.org_id;
    IF FOUND AND NOT EXISTS (SELECT 1 FROM membership_roles
                             WHERE org_id = OLD.org_id AND role = 'owner') THEN
        RAISE EXCEPTION 'organization % would be left without an owner', OLD.org_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organization_has_owner';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

DROP TRIGGER organizations_personal_closed_with_account ON organizations;
DROP FUNCTION organizations_personal_closed_with_account();
ALTER TABLE organizations ADD CHECK (personal_owner_id IS NULL OR deleted_at IS NULL);

ALTER TABLE users
    DROP CONSTRAINT users_deleted_detached,
    DROP COLUMN deleted_at,
    ALTER COLUMN subject SET NOT NULL;
