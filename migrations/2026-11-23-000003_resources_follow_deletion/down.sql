ALTER TABLE org_resources DROP CONSTRAINT org_resources_org_id_fkey,
    ADD CONSTRAINT org_resources_org_id_fkey FOREIGN KEY (org_id)
        REFERENCES organizations (id) ON DELETE CASCADE;
DROP TRIGGER org_resources_live_org ON org_resources;
DROP FUNCTION org_resources_live_org();
