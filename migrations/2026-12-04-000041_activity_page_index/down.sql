CREATE INDEX activity_org_time ON activity (org_id, created_at DESC);
DROP INDEX activity_org_page;
