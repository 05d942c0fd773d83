//! The benchmark's dataset: seeded straight into PostgreSQL in one transaction
//! (through the RPCs it would take hours), shaped like a platform's tenants — a
//! tenth of the organizations are large teams, the rest small ones, and every
//! user has the personal organization orgd gives each user.
//!
//! It is a bulk load, made to take minutes at 400,000 organizations: the rows
//! are generated in SQL (`generate_series`); foreign keys and triggers are not
//! checked row by row (`session_replication_role = replica`: the rows are
//! consistent by construction); and the indexes that back no constraint are
//! dropped first and built again from their own definitions once the rows are
//! in. The tables end up as orgd's migrations made them, with ids that are
//! UUIDv7 of the row's creation time, as orgd makes them (`Uuid::now_v7`).

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_postgres::Client;

/// How much to seed.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// How long each step of seeding took.
pub struct Seeding {
    /// Generating the rows and building the indexes, in one transaction.
    pub load: Duration,
    /// `VACUUM (ANALYZE)` and `CHECKPOINT`.
    pub settle: Duration,
}

impl Seeding {
    pub fn total(&self) -> Duration {
        self.load + self.settle
    }
}

/// The tables the seed fills; their indexes that back no constraint are built
/// after the rows are in.
const SEEDED_TABLES: &str = "'users', 'organizations', 'memberships', 'membership_roles', 'membership_permissions', \
     'subscriptions', 'subscription_segments', 'invitations', 'activity'";

pub async fn seed(db: &Client, shape: &Shape) -> anyhow::Result<(Dataset, Seeding)> {
    let large = shape.orgs / 10;
    let sql = format!(
        r#"
BEGIN;
-- Rows consistent by construction: no foreign-key or trigger check per row.
SET LOCAL session_replication_role = replica;

-- A UUIDv7 of `at` (its Unix milliseconds in the first 48 bits, version 7),
-- the rest random: what orgd's `Uuid::now_v7()` makes at that instant.
CREATE FUNCTION pg_temp.uuid7(at timestamptz) RETURNS uuid AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        placing substring(int8send((extract(epoch FROM at) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
        52, 1), 53, 1), 'hex')::uuid
$$ LANGUAGE sql VOLATILE;

-- Indexes backing no constraint are built once, after the rows are in.
CREATE TEMP TABLE bench_indexes ON COMMIT DROP AS
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relnamespace = 'public'::regnamespace AND t.relname IN ({SEEDED_TABLES})
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid);
DO $$ DECLARE ix record; BEGIN
    FOR ix IN SELECT name FROM bench_indexes LOOP EXECUTE 'DROP INDEX ' || ix.name; END LOOP;
END $$;

INSERT INTO users (id, subject, email, email_verified, display_name, created_at)
SELECT pg_temp.uuid7(at), 'bench-user-' || n, 'user' || n || '@bench.example', true,
       'Bench User ' || n, at
FROM generate_series(0, {users} - 1) n, LATERAL (SELECT now() - interval '1 minute' * n AS at) t;

-- Every user's personal organization, on the free plan.
INSERT INTO organizations (id, slug, display_name, personal_owner_id, created_at)
SELECT pg_temp.uuid7(created_at), 'bench-user-' || substr(subject, 12), display_name, id, created_at
FROM users WHERE subject LIKE 'bench-user-%';
INSERT INTO memberships (org_id, user_id, created_at)
SELECT id, personal_owner_id, created_at FROM organizations WHERE personal_owner_id IS NOT NULL;
INSERT INTO membership_roles (org_id, user_id, role)
SELECT id, personal_owner_id, 'owner' FROM organizations WHERE personal_owner_id IS NOT NULL;

CREATE TEMP TABLE bench_orgs AS
SELECT n, pg_temp.uuid7(now() - interval '1 minute' * n) AS id,
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
SELECT pg_temp.uuid7(now() - interval '1 hour' * i), o.id,
       'invitee' || o.n || '-' || i || '@bench.example',
       ARRAY['developer'], ARRAY[]::text[], uuid_send(gen_random_uuid()), s.state,
       owner.user_id, now() - interval '1 hour' * i, now() - interval '1 hour' * i,
       now() + interval '7 days' - interval '1 hour' * i,
       CASE WHEN s.state = 'pending' THEN NULL ELSE now() END
FROM bench_orgs o
CROSS JOIN generate_series(0, {INVITATIONS_PER_ORG} - 1) i
CROSS JOIN LATERAL (SELECT (ARRAY['pending', 'accepted', 'revoked', 'declined', 'expired'])[1 + i % 5] AS state) s
JOIN bench_members owner ON owner.org_id = o.id AND owner.k = 0;

INSERT INTO activity (id, org_id, actor_user_id, actor, action, target, request_id, created_at)
SELECT pg_temp.uuid7(at), m.org_id, m.user_id, 'users/' || m.user_id,
       (ARRAY['member.update', 'invitation.create', 'organization.update', 'invitation.accept'])[1 + (m.k + j) % 4],
       'organizations/' || m.org_id, 'seed', at
FROM bench_members m CROSS JOIN generate_series(0, {ACTIVITY_PER_MEMBER} - 1) j,
     LATERAL (SELECT now() - interval '1 minute' * (j * 97 + m.k) AS at) t;

DO $$ DECLARE ix record; BEGIN
    FOR ix IN SELECT definition FROM bench_indexes LOOP EXECUTE ix.definition; END LOOP;
END $$;
COMMIT;
"#,
        users = shape.users,
        orgs = shape.orgs,
    );
    let started = Instant::now();
    db.batch_execute(&sql)
        .await
        .context("seeding the dataset")?;
    let load = started.elapsed();
    // Settle the fresh rows as a long-running database would have them: their
    // visibility hints and statistics set (else autovacuum does it in the middle
    // of a measured run) and written out (else a checkpoint does). Each its own
    // statement: VACUUM refuses to run in a multi-statement string.
    let started = Instant::now();
    for settle in ["VACUUM (ANALYZE)", "CHECKPOINT"] {
        db.batch_execute(settle).await.context(settle)?;
    }
    let seeding = Seeding {
        load,
        settle: started.elapsed(),
    };
    Ok((load_dataset(db).await?, seeding))
}

/// Reads the seeded users and teams back, for the callers to pick from.
async fn load_dataset(db: &Client) -> anyhow::Result<Dataset> {
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

/// Reads every table and index of the database into PostgreSQL's shared
/// buffers (`pg_prewarm`), so that the runs start where a long-running server
/// is: its hot rows and index pages in memory. A bulk load leaves many of them
/// only in the kernel's page cache, and a warm-up of a few seconds touches a
/// fraction of 400,000 organizations. Returns the bytes read and the size of
/// shared buffers: what did not fit is read from outside them during the runs
/// (the per-statement `shared_blks_read` the benchmark prints shows it).
pub async fn prewarm(db: &Client) -> anyhow::Result<(i64, i64)> {
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .await
        .context("pg_prewarm (PostgreSQL's contrib) warms the cache")?;
    let row = db
        .query_one(
            "SELECT sum(pg_prewarm(c.oid)::bigint * current_setting('block_size')::bigint)::bigint,
                    pg_size_bytes(current_setting('shared_buffers'))
             FROM pg_class c
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
