//! Deleting an organization and getting it back: soft delete (its resources
//! checked and its final bill issued by `closing`), undelete within the restore
//! window, and the purge once the window has ended.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::change::{Change, owner_count};
use super::closing;
use super::org_row::{OrgRow, touch};
use super::orgs::{OrgLimits, Whose, lock_org_room, too_many_orgs};
use super::proof::OrgAccess;
use super::schema::{memberships, org_resources, organizations, users};
use super::{Actor, KeepPrepared, Store, audit, subscription_row};
use crate::domain::{Action, Etag, OrgRef, UserRef};
use crate::error::{Error, Result};

impl Store {
    /// Soft-deletes an organization; it is purged after `retention`.
    pub async fn delete_org(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        confirmation: &str,
        etag: Option<Etag>,
        retention: Duration,
    ) -> Result<OrgRow> {
        let org_id = access.org().id;
        let invoice_due = self.invoice_due;
        self.change(access, actor, |conn, Change { org, .. }| {
            async move {
                if org.personal_owner_id.is_some() {
                    return Err(Error::precondition(
                        "PERSONAL_ORGANIZATION",
                        org.name(),
                        "a personal organization is closed only with its user's account (DeleteUser)",
                    ));
                }
                if confirmation != org.display_name {
                    return Err(Error::invalid(
                        "confirmation",
                        format!(
                            "to delete, set confirmation to the organization's display name \"{}\"",
                            org.display_name
                        ),
                    ));
                }
                org.check_etag(etag)?;
                let closed = closing::close(conn, actor, &org, retention, invoice_due).await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::OrganizationDelete,
                    &closed.org.name(),
                    closed.details(),
                )
                .await?;
                Ok(closed.org)
            }
            .scope_boxed()
        })
        .await
    }

    /// Restores a soft-deleted organization, if no member would exceed their limit.
    pub async fn undelete_org(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        limits: OrgLimits,
    ) -> Result<OrgRow> {
        let org_id = access.org().id;
        // UndeleteOrganization's policy admits a deleted organization, and so
        // does the re-check (`OrgAccess::allows_deleted`).
        self.change(access, actor, |conn, Change { org, actor_id, .. }| {
            async move {
                match org.purge_at {
                    None => {
                        return Err(Error::precondition(
                            "NOT_DELETED",
                            org.name(),
                            format!("{} is not deleted", org.described()),
                        ));
                    }
                    Some(purge_at) if purge_at <= Utc::now() => {
                        return Err(Error::precondition(
                            "PURGE_PENDING",
                            org.name(),
                            format!(
                                "{} passed its restore window and is being purged",
                                org.described()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                if owner_count(conn, org_id).await? == 0 {
                    return Err(Error::precondition(
                        "NO_OWNER",
                        org.name(),
                        format!(
                            "organization {} has no owner left (its last owner's account was deleted), so it cannot be restored",
                            org.slug
                        ),
                    ));
                }
                let members: Vec<Uuid> = memberships::table
                    .filter(memberships::org_id.eq(org_id))
                    .select(memberships::user_id)
                    .order(memberships::user_id)
                    .load(conn)
                    .await?;
                for member in members {
                    let room = lock_org_room(conn, member, limits).await?;
                    if room.is_full() {
                        let whose = if member == actor_id {
                            Whose::Yours
                        } else {
                            Whose::Members
                        };
                        return Err(too_many_orgs(whose, member, room));
                    }
                }
                diesel::update(organizations::table.find(org_id))
                    .set((
                        organizations::deleted_at.eq(None::<DateTime<Utc>>),
                        organizations::purge_at.eq(None::<DateTime<Utc>>),
                    ))
                    .prepared()
                    .execute(conn)
                    .await?;
                subscription_row::reopen_subscription(conn, org_id).await?;
                let restored = touch(conn, org_id).await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::OrganizationUndelete,
                    &restored.name(),
                    serde_json::json!({}),
                )
                .await?;
                Ok(restored)
            }
            .scope_boxed()
        })
        .await
    }

    /// Purges organizations whose restore window has ended; returns their ids.
    pub async fn purge_expired_orgs(&self, actor: &Actor) -> Result<Vec<Uuid>> {
        self.write(|conn| {
            async move {
                // Registered resources block a purge (the foreign key restricts it);
                // such an organization waits, logged, instead of failing the batch.
                let has_resources = diesel::dsl::exists(
                    org_resources::table.filter(org_resources::org_id.eq(organizations::id)),
                );
                let stuck: Vec<String> = organizations::table
                    .filter(organizations::purge_at.le(diesel::dsl::now))
                    .filter(has_resources)
                    .select(organizations::slug)
                    .load(conn)
                    .await?;
                if !stuck.is_empty() {
                    tracing::warn!(
                        ?stuck,
                        "deleted organizations still hold resources; not purging them"
                    );
                }
                let purged: Vec<(Uuid, String, Option<Uuid>)> = diesel::delete(
                    organizations::table
                        .filter(organizations::purge_at.le(diesel::dsl::now))
                        .filter(diesel::dsl::not(has_resources)),
                )
                .returning((
                    organizations::id,
                    organizations::slug,
                    organizations::personal_owner_id,
                ))
                .get_results(conn)
                .await?;
                // A deleted account's tombstone goes with its personal
                // organization, and the API tokens it created with it.
                let accounts: Vec<Uuid> =
                    purged.iter().filter_map(|(_, _, owner)| *owner).collect();
                diesel::delete(
                    users::table
                        .filter(users::id.eq_any(&accounts))
                        .filter(users::deleted_at.is_not_null()),
                )
                .execute(conn)
                .await?;
                for (id, slug, owner) in &purged {
                    let details = match owner {
                        Some(owner) => {
                            serde_json::json!({ "slug": slug, "account": UserRef::name_of(*owner) })
                        }
                        None => serde_json::json!({ "slug": slug }),
                    };
                    audit::record(
                        conn,
                        actor,
                        Some(*id),
                        Action::OrganizationPurge,
                        &OrgRef::name_of(*id),
                        details,
                    )
                    .await?;
                }
                Ok(purged.into_iter().map(|(id, _, _)| id).collect())
            }
            .scope_boxed()
        })
        .await
    }
}
