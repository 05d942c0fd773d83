-- What a permission brings with it: `permission` implies `implies`. The table
-- holds the transitive closure, so that the queries that add up a member's
-- permissions (src/store/standing.rs, access.rs, tokens.rs) and the catalogue
-- (members.rs) apply one level of it. A migration adding implications adds
-- their closure too.
CREATE TABLE permission_implications (
    permission  text NOT NULL REFERENCES permissions (name) ON DELETE CASCADE,
    implies     text NOT NULL REFERENCES permissions (name) ON DELETE CASCADE,
    PRIMARY KEY (permission, implies),
    CHECK (permission <> implies)
);
-- CheckPermission asks which permissions grant the one in question.
CREATE INDEX permission_implications_implies ON permission_implications (implies, permission);

WITH RECURSIVE direct (permission, implies) AS (
    VALUES
        -- Platform.sh's "Manage billing": edit billing information, access
        -- invoices and vouchers.
        ('billing.manage', 'billing.read'),
        -- Invoices show the plan's lines: whoever reads them sees the plan.
        ('billing.read', 'subscription.read'),
        ('plans.manage', 'subscription.read'),
        ('members.manage', 'members.read')
    UNION
    -- Every member reads the organization they belong to: whatever they
    -- hold, they hold `org.read` with it.
    SELECT name, 'org.read' FROM permissions WHERE name <> 'org.read'
), closure (permission, implies) AS (
    SELECT permission, implies FROM direct
    UNION
    SELECT c.permission, d.implies
      FROM closure c JOIN direct d ON d.permission = c.implies
)
INSERT INTO permission_implications (permission, implies)
SELECT permission, implies FROM closure WHERE permission <> implies;

-- A permission added later implies `org.read` too, so that "every member reads
-- their organization" does not depend on each migration remembering it.
CREATE FUNCTION permissions_imply_org_read() RETURNS trigger AS $$
BEGIN
    IF NEW.name <> 'org.read' AND EXISTS (SELECT 1 FROM permissions WHERE name = 'org.read') THEN
        INSERT INTO permission_implications (permission, implies)
        VALUES (NEW.name, 'org.read') ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER permissions_imply_org_read AFTER INSERT ON permissions
    FOR EACH ROW EXECUTE FUNCTION permissions_imply_org_read();
