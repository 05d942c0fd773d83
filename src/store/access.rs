//! What a user may do in an organization: memberships, roles, individual grants,
//! and the permissions they add up to. Read from the database on every call, so a
//! role change takes effect on the very next request.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::orgs::{ListedOrg, OrgRow};
use super::schema::{
    membership_permissions, membership_roles, memberships, organizations, permissions,
    role_permissions,
};
use super::{Conn, Store};
use crate::domain::{OrgRef, PageRequest};
use crate::error::Result;

/// A member's standing in one organization.
#[derive(Debug, Clone, Default)]
pub struct MemberAccess {
    pub roles: Vec<String>,
    pub extra_permissions: Vec<String>,
    /// Union of the roles' permissions and the extra grants.
    pub effective: BTreeSet<String>,
    pub joined_at: DateTime<Utc>,
}

impl MemberAccess {
    pub fn allows(&self, permission: &str) -> bool {
        self.effective.contains(permission)
    }
}

/// A membership with its organization, for listings.
pub struct MembershipView {
    pub org: OrgRow,
    pub access: MemberAccess,
}

fn org_filter(
    org_ref: &OrgRef,
) -> Box<
    dyn BoxableExpression<organizations::table, diesel::pg::Pg, SqlType = diesel::sql_types::Bool>,
> {
    match org_ref {
        OrgRef::Id(id) => Box::new(organizations::id.eq(*id)),
        OrgRef::Slug(slug) => Box::new(organizations::slug.eq(slug.as_str().to_owned())),
    }
}

async fn find_org(conn: &mut Conn, org_ref: &OrgRef) -> Result<Option<OrgRow>> {
    Ok(organizations::table
        .filter(org_filter(org_ref))
        .select(OrgRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Roles, grants and effective permissions of `user_id` in each of `org_ids`.
async fn access_in(
    conn: &mut Conn,
    user_id: Uuid,
    org_ids: &[Uuid],
) -> Result<HashMap<Uuid, MemberAccess>> {
    let roles: Vec<(Uuid, String)> = membership_roles::table
        .filter(membership_roles::user_id.eq(user_id))
        .filter(membership_roles::org_id.eq_any(org_ids))
        .select((membership_roles::org_id, membership_roles::role))
        .order(membership_roles::role)
        .load(conn)
        .await?;
    let grants: Vec<(Uuid, String)> = membership_permissions::table
        .filter(membership_permissions::user_id.eq(user_id))
        .filter(membership_permissions::org_id.eq_any(org_ids))
        .select((
            membership_permissions::org_id,
            membership_permissions::permission,
        ))
        .order(membership_permissions::permission)
        .load(conn)
        .await?;
    let role_names: BTreeSet<&str> = roles.iter().map(|(_, role)| role.as_str()).collect();
    let mut role_grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let pairs: Vec<(String, String)> = role_permissions::table
        .filter(role_permissions::role.eq_any(role_names))
        .select((role_permissions::role, role_permissions::permission))
        .load(conn)
        .await?;
    for (role, permission) in pairs {
        role_grants.entry(role).or_default().push(permission);
    }

    let mut access: HashMap<Uuid, MemberAccess> = HashMap::new();
    for (org_id, role) in roles {
        let entry = access.entry(org_id).or_default();
        entry
            .effective
            .extend(role_grants.get(&role).into_iter().flatten().cloned());
        entry.roles.push(role);
    }
    for (org_id, permission) in grants {
        let entry = access.entry(org_id).or_default();
        entry.effective.insert(permission.clone());
        entry.extra_permissions.push(permission);
    }
    Ok(access)
}

impl Store {
    /// The organization `org_ref` names, with `user_id`'s access to it — or `None`
    /// when it does not exist *or* the user is not a member: callers must not be
    /// able to tell those apart.
    pub async fn member_access(
        &self,
        org_ref: &OrgRef,
        user_id: Uuid,
    ) -> Result<Option<(OrgRow, MemberAccess)>> {
        self.read(|conn| {
            async move {
                let Some(org) = find_org(conn, org_ref).await? else {
                    return Ok(None);
                };
                let joined_at: Option<DateTime<Utc>> = memberships::table
                    .find((org.id, user_id))
                    .select(memberships::created_at)
                    .first(conn)
                    .await
                    .optional()?;
                let Some(joined_at) = joined_at else {
                    return Ok(None);
                };
                let mut access = access_in(conn, user_id, &[org.id])
                    .await?
                    .remove(&org.id)
                    .unwrap_or_default();
                access.joined_at = joined_at;
                Ok(Some((org, access)))
            }
            .scope_boxed()
        })
        .await
    }

    /// The organization `org_ref` names, member or not; for trusted callers only.
    pub async fn find_org(&self, org_ref: &OrgRef) -> Result<Option<OrgRow>> {
        self.read(|conn| find_org(conn, org_ref).scope_boxed())
            .await
    }

    pub async fn permission_exists(&self, name: &str) -> Result<bool> {
        self.read(|conn| {
            async move {
                Ok(
                    diesel::select(diesel::dsl::exists(permissions::table.find(name)))
                        .get_result(conn)
                        .await?,
                )
            }
            .scope_boxed()
        })
        .await
    }

    /// A page of `user_id`'s live memberships with their roles and permissions.
    pub async fn memberships_of_user(
        &self,
        user_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<MembershipView>, String)> {
        let (orgs, next) = self.list_orgs_of_user(user_id, page, false).await?;
        let org_ids: Vec<Uuid> = orgs.iter().map(|listed| listed.org.id).collect();
        let mut access = self
            .read(|conn| async move { access_in(conn, user_id, &org_ids).await }.scope_boxed())
            .await?;
        let views = orgs
            .into_iter()
            .map(|ListedOrg { org, joined_at }| {
                let mut member = access.remove(&org.id).unwrap_or_default();
                member.joined_at = joined_at;
                MembershipView {
                    org,
                    access: member,
                }
            })
            .collect();
        Ok((views, next))
    }
}
