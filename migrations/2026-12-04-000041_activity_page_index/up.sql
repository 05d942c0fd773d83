-- ListActivities pages an organization's trail newest first by (created_at,
-- id), resuming after the last row of the previous page. The index ordered
-- by created_at alone left the tie-break on id to a sort of every page, and
-- the resumption to a filter, so a page deep in a long trail read (and
-- dropped) every newer row first. With id in the index, a page is one ordered
-- range scan that starts at the resumption point (src/store/audit.rs).
CREATE INDEX activity_org_page ON activity (org_id, created_at DESC, id DESC);
DROP INDEX activity_org_time;
