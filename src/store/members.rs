//! Members of an organization as they read: listing and looking up, with each
//! member's standing; and adding one (an accepted invitation, a new
//! organization's owner). Changes to members are `member_changes`'.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::catalog::Catalog;
use super::schema::{memberships, users};
use super::standing::{MemberAccess, held_columns, holds};
use super::{Conn, KeepPrepared, Store, both};
use crate::domain::{ChildName, Etag, Names, PageRequest, PageToken, Permission};
use crate::error::{Error, Result};

/// A member with their user's profile and their standing in the organization.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub org_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub invited_by: Option<Uuid>,
    pub revision: i64,
    pub updated_at: DateTime<Utc>,
    pub access: MemberAccess,
}

impl MemberView {
    pub fn name(&self) -> String {
        ChildName::name_of(self.org_id, ChildName::MEMBERS, self.user_id)
    }

    pub fn etag(&self) -> Etag {
        Etag(self.revision)
    }
}

/// One row of the member queries.
#[derive(QueryableByName)]
struct MemberRow {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    display_name: String,
    #[diesel(sql_type = Timestamptz)]
    joined_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    invited_by: Option<Uuid>,
    #[diesel(embed)]
    state: MemberState,
}

/// A membership's revision, when it last changed and what it holds, each set in
/// the order the member queries list it: columns of every member query, and what
/// `REPLACE_GRANT` returns.
#[derive(QueryableByName)]
pub(super) struct MemberState {
    #[diesel(sql_type = Int8)]
    revision: i64,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Array<Text>)]
    roles: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    extra_permissions: Vec<String>,
}

impl MemberState {
    /// The member's standing in the organization, joined at `joined_at`.
    fn access(self, joined_at: DateTime<Utc>, catalog: &Catalog) -> MemberAccess {
        MemberAccess {
            effective: catalog.effective(&self.roles, &self.extra_permissions),
            roles: self.roles,
            extra_permissions: self.extra_permissions,
            joined_at,
        }
    }

    /// `before`, the member as read earlier in the transaction, in this state.
    pub(super) fn applied_to(self, mut before: MemberView, catalog: &Catalog) -> MemberView {
        before.revision = self.revision;
        before.updated_at = self.updated_at;
        before.access = self.access(before.access.joined_at, catalog);
        before
    }
}

/// The members of organization `$1` that `$filter` selects, oldest first (at
/// most `$limit`), with their roles and extra grants. Each member's grants are
/// read through the primary keys (`held_columns!`): linear in the page, whatever
/// plan the planner picks. Gathering the page's grants in one pass and joining
/// them to the page instead lets a planner that expects an organization's usual
/// handful of members join every member with every grant (a page of 200: 5.2
/// against 1.2 ms). The effective permissions come from the catalog
/// (`Catalog::effective`), not from expanding roles here. Each way of selecting
/// members is its own statement, so that each keeps a plan that uses the index
/// (a generic plan of one statement with optional filters would read the whole
/// organization).
macro_rules! members_query {
    ($filter:expr, $limit:literal) => {
        concat!(
            "WITH page AS (
                SELECT m.org_id, m.user_id, m.created_at, m.invited_by, m.revision, m.updated_at
                  FROM memberships m
                 WHERE m.org_id = $1 ",
            $filter,
            " ORDER BY m.created_at, m.user_id ",
            $limit,
            ")
            SELECT m.user_id, u.email, u.display_name, m.created_at AS joined_at, m.invited_by,
                   m.revision, m.updated_at, ",
            held_columns!(),
            " FROM page m
              JOIN users u ON u.id = m.user_id
             ORDER BY m.created_at, m.user_id"
        )
    };
}

/// The members among users `$2`.
const MEMBERS_BY_ID: &str = members_query!("AND m.user_id = ANY($2)", "");
/// The first `$2` members.
const FIRST_MEMBERS: &str = members_query!("", "LIMIT $2");
/// The `$4` members after keyset position (`$2`, `$3`).
const MEMBERS_AFTER: &str = members_query!("AND (m.created_at, m.user_id) > ($2, $3)", "LIMIT $4");
/// The first `$3` members holding permission `$2`.
const FIRST_HOLDING: &str = members_query!(concat!("AND ", holds!("$2")), "LIMIT $3");
/// The `$5` members holding permission `$2` after keyset position (`$3`, `$4`).
const HOLDING_AFTER: &str = members_query!(
    concat!(
        "AND ",
        holds!("$2"),
        " AND (m.created_at, m.user_id) > ($3, $4)"
    ),
    "LIMIT $5"
);

/// Which members `load_members` reads.
pub(super) enum Selection<'a> {
    /// These users, each once.
    Ids(&'a [Uuid]),
    /// A page: the first, or the one after a keyset position; with `holding`,
    /// of the members who hold that permission only.
    Page {
        after: Option<PageToken>,
        limit: i64,
        holding: Option<&'a Permission>,
    },
}

/// The members `selection` names, with the catalog their effective permissions
/// came from.
pub(super) async fn load_members(
    conn: &Conn,
    org_id: Uuid,
    selection: Selection<'_>,
) -> Result<(Vec<MemberView>, Catalog)> {
    let query = |sql| {
        diesel::sql_query(sql)
            .into_boxed()
            .bind::<SqlUuid, _>(org_id)
    };
    let query = match selection {
        Selection::Ids(ids) => query(MEMBERS_BY_ID).bind::<Array<SqlUuid>, _>(ids),
        Selection::Page {
            after: None,
            limit,
            holding: None,
        } => query(FIRST_MEMBERS).bind::<Int8, _>(limit),
        Selection::Page {
            after: Some(after),
            limit,
            holding: None,
        } => query(MEMBERS_AFTER)
            .bind::<Timestamptz, _>(after.time)
            .bind::<SqlUuid, _>(after.id)
            .bind::<Int8, _>(limit),
        Selection::Page {
            after: None,
            limit,
            holding: Some(permission),
        } => query(FIRST_HOLDING)
            .bind::<Text, _>(&**permission)
            .bind::<Int8, _>(limit),
        Selection::Page {
            after: Some(after),
            limit,
            holding: Some(permission),
        } => query(HOLDING_AFTER)
            .bind::<Text, _>(&**permission)
            .bind::<Timestamptz, _>(after.time)
            .bind::<SqlUuid, _>(after.id)
            .bind::<Int8, _>(limit),
    };
    let rows = query.prepared().load::<MemberRow>(&mut &*conn);
    // Both go out together: one round trip.
    let (rows, catalog) = both(async { Ok(rows.await?) }, Catalog::load(conn)).await?;
    let members = rows
        .into_iter()
        .map(|row| MemberView {
            org_id,
            user_id: row.user_id,
            email: row.email,
            display_name: row.display_name,
            invited_by: row.invited_by,
            revision: row.state.revision,
            updated_at: row.state.updated_at,
            access: row.state.access(row.joined_at, &catalog),
        })
        .collect();
    Ok((members, catalog))
}

/// The members among `user_ids`; any that is not a member is NOT_FOUND.
pub(super) async fn members_by_id(
    conn: &Conn,
    org_id: Uuid,
    user_ids: &[Uuid],
) -> Result<HashMap<Uuid, MemberView>> {
    Ok(members_and_catalog(conn, org_id, user_ids).await?.0)
}

/// `members_by_id`, with the role catalog read in the same round trip.
pub(super) async fn members_and_catalog(
    conn: &Conn,
    org_id: Uuid,
    user_ids: &[Uuid],
) -> Result<(HashMap<Uuid, MemberView>, Catalog)> {
    let (members, catalog) = load_members(conn, org_id, Selection::Ids(user_ids)).await?;
    let found: HashMap<Uuid, MemberView> = members
        .into_iter()
        .map(|member| (member.user_id, member))
        .collect();
    match user_ids.iter().find(|id| !found.contains_key(id)) {
        Some(missing) => Err(Error::NotFound(format!(
            "member {} not found",
            ChildName::name_of(org_id, ChildName::MEMBERS, *missing)
        ))),
        None => Ok((found, catalog)),
    }
}

/// Makes member `$2` of `$1` hold exactly roles `$3` and permissions `$4` (a
/// NULL leaves that set alone) and bumps the member's revision, in one
/// statement. Rows that stay are left untouched, so the owner trigger only sees
/// roles that really go; the sub-statements touch disjoint rows, so their order
/// does not matter. Returns the member's new `MemberState`: the statement's
/// snapshot predates its own changes, so the sets it replaced come from its
/// arguments, and only the ones it left alone are read.
const REPLACE_GRANT: &str = "
    WITH dropped_roles AS (
        DELETE FROM membership_roles
         WHERE $3::text[] IS NOT NULL AND org_id = $1 AND user_id = $2
           AND NOT (role = ANY($3))
    ), added_roles AS (
        INSERT INTO membership_roles (org_id, user_id, role)
        SELECT $1, $2, unnest($3::text[])
        ON CONFLICT DO NOTHING
    ), dropped_permissions AS (
        DELETE FROM membership_permissions
         WHERE $4::text[] IS NOT NULL AND org_id = $1 AND user_id = $2
           AND NOT (permission = ANY($4))
    ), added_permissions AS (
        INSERT INTO membership_permissions (org_id, user_id, permission)
        SELECT $1, $2, unnest($4::text[])
        ON CONFLICT DO NOTHING
    )
    UPDATE memberships SET revision = revision + 1, updated_at = CURRENT_TIMESTAMP
     WHERE org_id = $1 AND user_id = $2
    RETURNING revision, updated_at,
        CASE WHEN $3::text[] IS NULL
             THEN ARRAY(SELECT role FROM membership_roles
                         WHERE org_id = $1 AND user_id = $2 ORDER BY role)
             ELSE ARRAY(SELECT DISTINCT unnest($3::text[]) ORDER BY 1) END AS roles,
        CASE WHEN $4::text[] IS NULL
             THEN ARRAY(SELECT permission FROM membership_permissions
                         WHERE org_id = $1 AND user_id = $2 ORDER BY permission)
             ELSE ARRAY(SELECT DISTINCT unnest($4::text[]) ORDER BY 1) END AS extra_permissions";

/// Makes the member hold exactly `role_names` and `permission_names` (each
/// `None` leaves that set alone) and bumps the member's revision.
pub(super) async fn replace_grant(
    conn: &Conn,
    org_id: Uuid,
    user_id: Uuid,
    role_names: Option<&Names>,
    permission_names: Option<&Names>,
) -> Result<MemberState> {
    Ok(diesel::sql_query(REPLACE_GRANT)
        .bind::<SqlUuid, _>(org_id)
        .bind::<SqlUuid, _>(user_id)
        .bind::<Nullable<Array<Text>>, _>(role_names.map(Names::to_vec))
        .bind::<Nullable<Array<Text>>, _>(permission_names.map(Names::to_vec))
        .prepared()
        .get_result(&mut &*conn)
        .await?)
}

/// Adds a member holding exactly `role_names` and `permission_names`.
pub(super) async fn insert_member(
    conn: &mut Conn,
    org_id: Uuid,
    user_id: Uuid,
    invited_by: Option<Uuid>,
    role_names: &Names,
    permission_names: &Names,
) -> Result<MemberView> {
    diesel::insert_into(memberships::table)
        .values((
            memberships::org_id.eq(org_id),
            memberships::user_id.eq(user_id),
            memberships::invited_by.eq(invited_by),
        ))
        .execute(conn)
        .await?;
    replace_grant(
        conn,
        org_id,
        user_id,
        Some(role_names),
        Some(permission_names),
    )
    .await?;
    let mut members = members_by_id(conn, org_id, &[user_id]).await?;
    Ok(members.remove(&user_id).expect("the member was just added"))
}

/// How many members `org_id` has now.
pub(super) async fn member_count(conn: &mut Conn, org_id: Uuid) -> Result<i64> {
    Ok(memberships::table
        .filter(memberships::org_id.eq(org_id))
        .count()
        .get_result(conn)
        .await?)
}

pub(super) async fn is_member(conn: &mut Conn, org_id: Uuid, user_id: Uuid) -> Result<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        memberships::table.find((org_id, user_id)),
    ))
    .get_result(conn)
    .await?)
}

/// Whether someone whose verified email is `email` is a member of `org_id`.
pub(super) async fn is_member_by_email(conn: &mut Conn, org_id: Uuid, email: &str) -> Result<bool> {
    let query = memberships::table
        .inner_join(users::table)
        .filter(memberships::org_id.eq(org_id))
        .filter(users::email_verified)
        // Stored folded (ASCII), so matched as it is.
        .filter(users::email.eq(email));
    Ok(diesel::select(diesel::dsl::exists(query))
        .get_result(conn)
        .await?)
}

impl Store {
    /// A page of the organization's members, oldest first.
    pub async fn list_members(
        &self,
        org_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<MemberView>, String)> {
        let rows = self
            .read(|conn| {
                async move {
                    let selection = Selection::Page {
                        after: page.after,
                        limit: page.limit + 1,
                        holding: None,
                    };
                    let (members, _) = load_members(conn, org_id, selection).await?;
                    Ok(members)
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(rows, |m: &MemberView| PageToken {
            time: m.access.joined_at,
            id: m.user_id,
        }))
    }

    pub async fn get_member(&self, org_id: Uuid, user_id: Uuid) -> Result<MemberView> {
        self.read(|conn| {
            async move {
                let mut found = members_by_id(conn, org_id, &[user_id]).await?;
                Ok(found.remove(&user_id).expect("members_by_id checked it"))
            }
            .scope_boxed()
        })
        .await
    }
}
