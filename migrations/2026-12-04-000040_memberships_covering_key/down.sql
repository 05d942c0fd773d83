CREATE UNIQUE INDEX memberships_key_plain ON memberships (org_id, user_id);

ALTER TABLE membership_roles DROP CONSTRAINT membership_roles_org_id_user_id_fkey;
ALTER TABLE membership_permissions DROP CONSTRAINT membership_permissions_org_id_user_id_fkey;
ALTER TABLE memberships DROP CONSTRAINT memberships_pkey;
ALTER TABLE memberships ADD CONSTRAINT memberships_pkey PRIMARY KEY USING INDEX memberships_key_plain;
ALTER TABLE membership_roles ADD CONSTRAINT membership_roles_org_id_user_id_fkey
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id) ON DELETE CASCADE;
ALTER TABLE membership_permissions ADD CONSTRAINT membership_permissions_org_id_user_id_fkey
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id) ON DELETE CASCADE;
