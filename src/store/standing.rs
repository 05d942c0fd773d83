//! A member's standing in an organization and the one query that reads it.
//! Low in the store (it depends on no other aggregate), so that the policy
//! layer, the change helper and the aggregates can all read a standing.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{Conn, KeepPrepared, TokenLimit};
use crate::error::Result;

/// A member's standing in one organization.
#[derive(Debug, Clone, Default)]
pub struct MemberAccess {
    pub roles: Vec<String>,
    pub extra_permissions: Vec<String>,
    /// Union of the roles' permissions and the extra grants, with what they
    /// imply (`permission_implications`).
    pub effective: BTreeSet<String>,
    pub joined_at: DateTime<Utc>,
}

impl MemberAccess {
    pub fn new(
        roles: Vec<String>,
        extra_permissions: Vec<String>,
        effective: Vec<String>,
        joined_at: DateTime<Utc>,
    ) -> Self {
        MemberAccess {
            roles,
            extra_permissions,
            effective: effective.into_iter().collect(),
            joined_at,
        }
    }

    pub fn allows(&self, permission: &str) -> bool {
        self.effective.contains(permission)
    }

    /// Narrows this standing to what an API token carries.
    pub fn limit_to(&mut self, limit: &TokenLimit) {
        self.roles.retain(|role| limit.roles.contains(role));
        self.extra_permissions
            .retain(|permission| limit.permissions.contains(permission));
        self.effective
            .retain(|permission| limit.permissions.contains(permission));
    }
}

/// One row of `ACCESS_QUERY`.
#[derive(QueryableByName)]
struct AccessRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    org_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    joined_at: DateTime<Utc>,
    #[diesel(embed)]
    grants: Grants,
}

/// The roles and individual grants of the membership `m`, each in name order,
/// as two text-array columns read through the primary keys. A macro so that
/// queries can `concat!` it.
macro_rules! held_columns {
    () => {
        "ARRAY(SELECT r.role FROM membership_roles r
               WHERE r.org_id = m.org_id AND r.user_id = m.user_id ORDER BY 1) AS roles,
         ARRAY(SELECT g.permission FROM membership_permissions g
               WHERE g.org_id = m.org_id AND g.user_id = m.user_id ORDER BY 1) AS extra_permissions"
    };
}
pub(super) use held_columns;

/// The permissions `$held` (a query of one column, `permission`) holds, with
/// what they imply (`permission_implications` holds the closure, so one level
/// is all): a query of one column. A macro so that queries can `concat!` it;
/// every effective set orgd computes in SQL goes through it.
macro_rules! with_implied {
    ($held:expr) => {
        concat!(
            "WITH held AS (",
            $held,
            ") SELECT held.permission FROM held
               UNION
               SELECT i.implies FROM held
                   JOIN permission_implications i ON i.permission = held.permission"
        )
    };
}
pub(super) use with_implied;

/// Whether the membership `m` holds the permission `$permission` (an SQL
/// expression): through a role or an individual grant, of it or of a
/// permission that implies it. A condition read through primary keys and
/// `permission_implications_implies`, whatever the organization's size; a
/// macro so that queries can `concat!` it. Every question "does this member
/// hold that?" orgd asks in SQL goes through it.
macro_rules! holds {
    ($permission:literal) => {
        concat!(
            "EXISTS (WITH granting AS (
                         SELECT ",
            $permission,
            " AS permission
                         UNION ALL
                         SELECT i.permission FROM permission_implications i
                          WHERE i.implies = ",
            $permission,
            ")
                     SELECT 1 FROM membership_roles r
                       JOIN role_permissions rp ON rp.role = r.role
                      WHERE r.org_id = m.org_id AND r.user_id = m.user_id
                        AND rp.permission IN (SELECT permission FROM granting)
                     UNION ALL
                     SELECT 1 FROM membership_permissions g
                      WHERE g.org_id = m.org_id AND g.user_id = m.user_id
                        AND g.permission IN (SELECT permission FROM granting))"
        )
    };
}
pub(super) use holds;

/// `held_columns!()` and the effective permissions they add up to (with what
/// they imply), as three text-array columns of the membership `m`.
macro_rules! grant_columns {
    () => {
        concat!(
            $crate::store::standing::held_columns!(),
            ",
         ARRAY(",
            $crate::store::standing::with_implied!(
                "SELECT rp.permission FROM membership_roles r
                   JOIN role_permissions rp ON rp.role = r.role
                   WHERE r.org_id = m.org_id AND r.user_id = m.user_id
               UNION ALL
               SELECT g.permission FROM membership_permissions g
                   WHERE g.org_id = m.org_id AND g.user_id = m.user_id"
            ),
            ") AS effective"
        )
    };
}

pub(super) use grant_columns;

/// The three `grant_columns!()` of a row.
#[derive(QueryableByName)]
pub(super) struct Grants {
    #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Text>)]
    roles: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Text>)]
    extra_permissions: Vec<String>,
    #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Text>)]
    effective: Vec<String>,
}

impl Grants {
    /// The standing of a member who joined at `joined_at` with these grants.
    pub(super) fn access(self, joined_at: DateTime<Utc>) -> MemberAccess {
        MemberAccess::new(
            self.roles,
            self.extra_permissions,
            self.effective,
            joined_at,
        )
    }
}

/// A user's memberships in a set of organizations with roles, grants and the
/// permissions they add up to, in one round trip (this runs on every call).
const ACCESS_QUERY: &str = concat!(
    "SELECT m.org_id, m.created_at AS joined_at, ",
    grant_columns!(),
    " FROM memberships m WHERE m.user_id = $1 AND m.org_id = ANY($2)"
);

/// Access of `user_id` in each of `org_ids` they belong to.
pub(super) async fn access_in(
    conn: &Conn,
    user_id: Uuid,
    org_ids: &[Uuid],
) -> Result<HashMap<Uuid, MemberAccess>> {
    let rows: Vec<AccessRow> = diesel::sql_query(ACCESS_QUERY)
        .bind::<diesel::sql_types::Uuid, _>(user_id)
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(org_ids)
        .prepared()
        .load(&mut &*conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.org_id, row.grants.access(row.joined_at)))
        .collect())
}
