//! The benchmark's dataset: seeded straight into PostgreSQL in one transaction
//! (through the RPCs it would take hours), shaped like a platform's tenants — a
//! tenth of the organizations are large teams, the rest small ones, and every
//! user has the personal organization orgd gives each user.

use anyhow::Context;
use tokio_postgres::Client;

/// How much to seed.
pub struct Shape {
    pub orgs: u32,
    pub users: u32,
}

/// Members of each large team organization: more than a page of 50.
const LARGE_TEAM: u32 = 55;
/// Members of each small team organization.
const SMALL_TEAM: u32 = 5;
/// Invitations (in every state) per team organization.
const INVITATIONS_PER_ORG: u32 = 10;
/// Activity rows per team membership.
const ACTIVITY_PER_MEMBER: u32 = 2;

/// A seeded user, as the benchmark signs in as them.
pub struct User {
    pub subject: String,
    pub email: String,
    pub display_name: String,
    pub id: uuid::Uuid,
}

/// A team organization with its members, owner first.
pub struct Team {
    pub slug: String,
    /// Indexes into `Dataset::users`; `members[0]` is the owner.
    pub members: Vec<usize>,
}

pub struct Dataset {
    pub users: Vec<User>,
    pub teams: Vec<Team>,
    /// Row counts per table, for the report.
    pub counts: Vec<(String, i64)>,
}

impl Dataset {
    /// The teams with more than a page of members.
    pub fn large_teams(&self) -> impl Iterator<Item = (usize, &Team)> {
        self.teams
            .iter()
            .enumerate()
            .filter(|(_, team)| team.members.len() as u32 >= LARGE_TEAM)
    }
}

pub async fn seed(db: &Client, shape: &Shape) -> anyhow::Result<Dataset> {
    let large = shape.orgs / 10;
    let sql = format!(
        r#"
BEGIN;
INSERT INTO users (id, subject, email, email_verified, display_name, created_at)
SELECT gen_random_uuid(), 'bench-user-' || n, 'user' || n || '@bench.example', true,
       'Bench User ' || n, now() - interval '1 hour' * n
FROM generate_series(0, {users} - 1) n;

-- Every user's personal organization, on the free plan.
INSERT INTO organizations (id, slug, display_name, personal_owner_id, created_at)
SELECT gen_random_uuid(), 'bench-user-' || substr(subject, 12), display_name, id, created_at
FROM users WHERE subject LIKE 'bench-user-%';
INSERT INTO memberships (org_id, user_id, created_at)
SELECT id, personal_owner_id, created_at FROM organizations WHERE personal_owner_id IS NOT NULL;
INSERT INTO membership_roles (org_id, user_id, role)
SELECT id, personal_owner_id, 'owner' FROM organizations WHERE personal_owner_id IS NOT NULL;

CREATE TEMP TABLE bench_orgs AS
SELECT n, gen_random_uuid() AS id,
       CASE WHEN n < {large} THEN {LARGE_TEAM} ELSE {SMALL_TEAM} END AS size,
       CASE WHEN n < {large} THEN n * {LARGE_TEAM}
            ELSE {large} * {LARGE_TEAM} + (n - {large}) * {SMALL_TEAM} END AS first_user
FROM generate_series(0, {orgs} - 1) n;

INSERT INTO organizations (id, slug, display_name, description, contact_email, created_at)
SELECT id, 'bench-' || n, 'Bench Org ' || n, 'Seeded by the load benchmark',
       'ops' || n || '@bench.example', now() - interval '1 minute' * n
FROM bench_orgs;

-- Members: consecutive users (wrapping around), owner first, then an admin,
-- then a mix of developers, viewers and billing members, some with extra grants.
CREATE TEMP TABLE bench_members AS
SELECT o.id AS org_id, u.id AS user_id, k
FROM bench_orgs o
CROSS JOIN LATERAL generate_series(0, o.size - 1) k
JOIN users u ON u.subject = 'bench-user-' || ((o.first_user + k) % {users});
INSERT INTO memberships (org_id, user_id, created_at)
SELECT org_id, user_id, now() - interval '1 minute' * (1000 - k) FROM bench_members;
INSERT INTO membership_roles (org_id, user_id, role)
SELECT org_id, user_id,
       CASE WHEN k = 0 THEN 'owner' WHEN k = 1 THEN 'admin' WHEN k % 7 = 3 THEN 'viewer'
            WHEN k % 11 = 5 THEN 'billing' ELSE 'developer' END
FROM bench_members;
INSERT INTO membership_permissions (org_id, user_id, permission)
SELECT org_id, user_id, 'billing.read' FROM bench_members WHERE k % 13 = 6;

INSERT INTO subscriptions (org_id, plan_id, period_start, period_end)
SELECT id, CASE WHEN personal_owner_id IS NULL THEN 'team' ELSE 'hobby' END,
       now() - interval '3 days', now() + interval '27 days'
FROM organizations;
INSERT INTO subscription_segments (org_id, starts_at, plan_id)
SELECT org_id, period_start, plan_id FROM subscriptions;

INSERT INTO invitations (id, org_id, email, roles, extra_permissions, token_hash, state,
                         inviter_id, created_at, sent_at, expires_at, closed_at)
SELECT gen_random_uuid(), o.id, 'invitee' || o.n || '-' || i || '@bench.example',
       ARRAY['developer'], ARRAY[]::text[], uuid_send(gen_random_uuid()), s.state,
       owner.user_id, now() - interval '1 hour' * i, now() - interval '1 hour' * i,
       now() + interval '7 days' - interval '1 hour' * i,
       CASE WHEN s.state = 'pending' THEN NULL ELSE now() END
FROM bench_orgs o
CROSS JOIN generate_series(0, {INVITATIONS_PER_ORG} - 1) i
CROSS JOIN LATERAL (SELECT (ARRAY['pending', 'accepted', 'revoked', 'declined', 'expired'])[1 + i % 5] AS state) s
JOIN bench_members owner ON owner.org_id = o.id AND owner.k = 0;

INSERT INTO activity (id, org_id, actor_user_id, actor, action, target, request_id, created_at)
SELECT gen_random_uuid(), m.org_id, m.user_id, 'users/' || m.user_id,
       (ARRAY['member.update', 'invitation.create', 'organization.update', 'invitation.accept'])[1 + (m.k + j) % 4],
       'organizations/' || m.org_id, 'seed', now() - interval '1 minute' * (j * 97 + m.k)
FROM bench_members m CROSS JOIN generate_series(0, {ACTIVITY_PER_MEMBER} - 1) j;
COMMIT;
"#,
        users = shape.users,
        orgs = shape.orgs,
    );
    db.batch_execute(&sql)
        .await
        .context("seeding the dataset")?;
    // Settle the fresh rows as a long-running database would have them: their
    // visibility hints and statistics set (else autovacuum does it in the middle
    // of a measured run) and written out (else a checkpoint does). Each its own
    // statement: VACUUM refuses to run in a multi-statement string.
    for settle in ["VACUUM (ANALYZE)", "CHECKPOINT"] {
        db.batch_execute(settle).await.context(settle)?;
    }
    load(db).await
}

/// Reads the seeded users and teams back, for the callers to pick from.
async fn load(db: &Client) -> anyhow::Result<Dataset> {
    let mut users = Vec::new();
    let mut index = std::collections::HashMap::new();
    for row in db
        .query(
            "SELECT id, subject, email, display_name FROM users ORDER BY subject",
            &[],
        )
        .await?
    {
        index.insert(row.get::<_, uuid::Uuid>(0), users.len());
        users.push(User {
            id: row.get(0),
            subject: row.get(1),
            email: row.get(2),
            display_name: row.get(3),
        });
    }
    let mut teams: Vec<Team> = Vec::new();
    for row in db
        .query(
            "SELECT o.slug, m.user_id FROM organizations o JOIN memberships m ON m.org_id = o.id
             LEFT JOIN membership_roles r ON r.org_id = m.org_id AND r.user_id = m.user_id AND r.role = 'owner'
             WHERE o.personal_owner_id IS NULL
             ORDER BY o.slug, r.role IS NULL, m.created_at",
            &[],
        )
        .await?
    {
        let slug: String = row.get(0);
        let member = index[&row.get::<_, uuid::Uuid>(1)];
        match teams.last_mut() {
            Some(team) if team.slug == slug => team.members.push(member),
            _ => teams.push(Team {
                slug,
                members: vec![member],
            }),
        }
    }
    let mut counts = Vec::new();
    for table in [
        "organizations",
        "users",
        "memberships",
        "invitations",
        "activity",
    ] {
        let count: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        counts.push((table.to_owned(), count));
    }
    Ok(Dataset {
        users,
        teams,
        counts,
    })
}
