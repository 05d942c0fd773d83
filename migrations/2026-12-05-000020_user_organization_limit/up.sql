-- Support may let one user belong to more (or fewer) organizations than
-- --max-orgs-per-user allows everyone, as Koyeb does on request ("If you need
-- more please email us"). NULL: the service's limit.
ALTER TABLE users ADD COLUMN organization_limit integer
    CHECK (organization_limit BETWEEN 1 AND 1000);
