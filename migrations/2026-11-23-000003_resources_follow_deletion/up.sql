-- A soft-deleted organization takes no new resources, and a purge never drops
-- registered resources silently (which would orphan what they describe).
CREATE FUNCTION org_resources_live_org() RETURNS trigger AS $$
BEGIN
    -- FOR SHARE waits for a concurrent delete, then sees its outcome.
    PERFORM 1 FROM organizations WHERE id = NEW.org_id AND deleted_at IS NULL FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'organization % is deleted or does not exist', NEW.org_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'org_resources_live_org';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER org_resources_live_org
    BEFORE INSERT OR UPDATE OF org_id ON org_resources
    FOR EACH ROW EXECUTE FUNCTION org_resources_live_org();

ALTER TABLE org_resources DROP CONSTRAINT org_resources_org_id_fkey,
    ADD CONSTRAINT org_resources_org_id_fkey FOREIGN KEY (org_id)
        REFERENCES organizations (id) ON DELETE RESTRICT;
