-- Every call in an organization reads the caller's membership with its join
-- time (`m.created_at AS joined_at`, src/store/access.rs). The primary key
-- (org_id, user_id) could not answer that alone, so PostgreSQL read it from
-- memberships_org (org_id, created_at, user_id) instead, an index-only scan
-- whose condition on user_id, not a leading column, made it read every member
-- of the organization: 4 buffers in a team of 55 at 400,000 organizations,
-- 80 in one of 10,000 members (BENCHMARKS.md, item 27). The key now carries the
-- join time, so the lookup is one exact index-only descent at any size.
CREATE UNIQUE INDEX memberships_key_covering ON memberships (org_id, user_id) INCLUDE (created_at);

ALTER TABLE membership_roles DROP CONSTRAINT membership_roles_org_id_user_id_fkey;
ALTER TABLE membership_permissions DROP CONSTRAINT membership_permissions_org_id_user_id_fkey;
ALTER TABLE memberships DROP CONSTRAINT memberships_pkey;
ALTER TABLE memberships ADD CONSTRAINT memberships_pkey PRIMARY KEY USING INDEX memberships_key_covering;
ALTER TABLE membership_roles ADD CONSTRAINT membership_roles_org_id_user_id_fkey
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id) ON DELETE CASCADE;
ALTER TABLE membership_permissions ADD CONSTRAINT membership_permissions_org_id_user_id_fkey
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id) ON DELETE CASCADE;
