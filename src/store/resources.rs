//! The resource registry. Registration locks the organization row, so the plan's
//! resource limit and a concurrent deletion cannot race it; a transfer locks both
//! organizations (in id order, so two opposite transfers cannot deadlock).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::access::find_org;
use super::change::{Demand, actor_id, recheck, token_still_works};
use super::limits::ensure_resource_room;
use super::org_row::lock_org;
use super::paging::oldest_first_after;
use super::proof::OrgAccess;
use super::schema::org_resources;
use super::standing::access_in;
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{Action, ChildName, OrgRef, PageRequest, PageToken};
use crate::error::{Error, Result};

pub const RESOURCES: &str = "resources";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = org_resources, check_for_backend(diesel::pg::Pg))]
pub struct ResourceRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub kind: String,
    pub external_id: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

impl ResourceRow {
    pub fn name(&self) -> String {
        ChildName::name_of(self.org_id, RESOURCES, self.id)
    }
}

pub struct NewResource {
    pub kind: String,
    pub external_id: String,
    pub display_name: String,
}

async fn find_resource(conn: &mut Conn, org_id: Uuid, id: Uuid, lock: bool) -> Result<ResourceRow> {
    let query = org_resources::table
        .filter(org_resources::id.eq(id))
        .filter(org_resources::org_id.eq(org_id))
        .select(ResourceRow::as_select());
    let found = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    found.ok_or_else(|| {
        Error::NotFound(format!(
            "resource {} not found",
            ChildName::name_of(org_id, RESOURCES, id)
        ))
    })
}

impl Store {
    pub async fn register_resource(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        new: NewResource,
    ) -> Result<ResourceRow> {
        let new = &new;
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                ensure_resource_room(conn, &change.org).await?;
                let row: ResourceRow = diesel::insert_into(org_resources::table)
                    .values((
                        org_resources::id.eq(Uuid::now_v7()),
                        org_resources::org_id.eq(org_id),
                        org_resources::kind.eq(&new.kind),
                        org_resources::external_id.eq(&new.external_id),
                        org_resources::display_name.eq(&new.display_name),
                    ))
                    .returning(ResourceRow::as_returning())
                    .get_result(conn)
                    .await
                    .map_err(|err| match err {
                        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                            Error::AlreadyExists(format!(
                                "a {} with external id '{}' is already registered",
                                new.kind, new.external_id
                            ))
                        }
                        other => other.into(),
                    })?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::ResourceRegister,
                    &row.name(),
                    serde_json::json!({ "kind": row.kind, "external_id": row.external_id }),
                )
                .await?;
                Ok(row)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn unregister_resource(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: Uuid,
    ) -> Result<()> {
        let org_id = access.org().id;
        self.change(access, actor, |conn, _| {
            async move {
                let row = find_resource(conn, org_id, id, true).await?;
                diesel::delete(org_resources::table.find(id))
                    .execute(conn)
                    .await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::ResourceUnregister,
                    &row.name(),
                    serde_json::json!({ "kind": row.kind, "external_id": row.external_id }),
                )
                .await
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn get_resource(&self, org_id: Uuid, id: Uuid) -> Result<ResourceRow> {
        self.read(|conn| find_resource(conn, org_id, id, false).scope_boxed())
            .await
    }

    /// A page of the organization's resources, oldest first.
    pub async fn list_resources(
        &self,
        org_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<ResourceRow>, String)> {
        let rows = self
            .read(|conn| {
                async move {
                    let mut query = org_resources::table
                        .filter(org_resources::org_id.eq(org_id))
                        .order((org_resources::created_at, org_resources::id))
                        .limit(page.limit + 1)
                        .select(ResourceRow::as_select())
                        .into_boxed();
                    if let Some(after) = page.after {
                        query = query.filter(oldest_first_after!(
                            org_resources::created_at,
                            org_resources::id,
                            after
                        ));
                    }
                    Ok(query.load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(rows, |row: &ResourceRow| PageToken {
            time: row.created_at,
            id: row.id,
        }))
    }

    /// Moves a resource to `destination` when the caller owns both organizations
    /// and the destination's plan has room; audited in both. Not `Store::change`:
    /// it locks two organizations, in id order (two opposite transfers must not
    /// deadlock), then re-checks the caller in both with `recheck` as every
    /// change does.
    pub async fn transfer_resource(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: Uuid,
        destination: &OrgRef,
    ) -> Result<ResourceRow> {
        let org_id = access.org().id;
        let user_id = actor_id(actor)?;
        self.write(|conn| {
            async move {
                // A non-member must not learn whether the destination exists.
                let not_found = || {
                    Error::NotFound(format!("organization {} not found", destination.name()))
                };
                let target_id = find_org(conn, destination)
                    .await?
                    .ok_or_else(not_found)?
                    .id;
                // Membership first, before any lock or state is revealed: a
                // non-member (or a token of another organization) learns nothing.
                if !actor.reaches(target_id) || access_in(conn, user_id, &[target_id]).await?.is_empty() {
                    return Err(not_found());
                }
                if target_id == org_id {
                    return Err(Error::invalid(
                        "destination",
                        "the resource is already in that organization",
                    ));
                }
                let (first, second) = if org_id < target_id {
                    (org_id, target_id)
                } else {
                    (target_id, org_id)
                };
                let mut locked = [lock_org(conn, first).await?, lock_org(conn, second).await?];
                if locked[0].id != org_id {
                    locked.swap(0, 1);
                }
                let [source, target] = locked;
                // Both standings in one read, under both locks: the source as the
                // policy layer checked it, the destination as a member's.
                let mut standings = access_in(conn, user_id, &[org_id, target_id]).await?;
                token_still_works(conn, actor).await?;
                let source = recheck(source, standings.remove(&org_id), actor, user_id, access.into())?;
                let membership = Demand { permission: None, allows_deleted: false };
                let target = recheck(target, standings.remove(&target_id), actor, user_id, membership)?;
                // The owner rule is a role, which no policy option can demand:
                // checked here, on the standings read under the locks.
                for side in [&source, &target] {
                    if !side.is_owner() {
                        return Err(Error::PermissionDenied(format!(
                            "moving a resource needs the owner role in both organizations, and you are not an owner of {}",
                            side.org.described()
                        )));
                    }
                }
                let (source, target) = (source.org, target.org);
                let row = find_resource(conn, org_id, id, true).await?;
                ensure_resource_room(conn, &target).await?;
                let moved: ResourceRow = diesel::update(org_resources::table.find(id))
                    .set(org_resources::org_id.eq(target.id))
                    .returning(ResourceRow::as_returning())
                    .prepared()
                    .get_result(conn)
                    .await?;
                let details = serde_json::json!({
                    "from": source.name(), "to": target.name(),
                    "kind": moved.kind, "external_id": moved.external_id,
                });
                audit::record(conn, actor, Some(source.id), Action::ResourceTransferOut, &row.name(), details.clone())
                    .await?;
                audit::record(conn, actor, Some(target.id), Action::ResourceTransferIn, &moved.name(), details)
                    .await?;
                Ok(moved)
            }
            .scope_boxed()
        })
        .await
    }
}
