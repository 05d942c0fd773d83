DROP TRIGGER permissions_imply_org_read ON permissions;
DROP FUNCTION permissions_imply_org_read();
DROP TABLE permission_implications;
