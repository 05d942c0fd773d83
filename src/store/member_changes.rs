//! Changing who holds what in an organization: role and permission updates,
//! removal, leaving and ownership transfer.
//!
//! Every change starts with `Store::change` (`super::change`), which locks the
//! organization row: the membership changes of one organization then run one at
//! a time, on whichever replica they arrive, and each sees the outcome of the one
//! before. Under that lock it re-reads the caller's standing; a change then
//! applies the grant ceiling (nobody gives or takes away more than they hold)
//! and, before commit, checks that an owner remains. A deferred trigger in the
//! database checks the owner invariant again.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::future::join_all;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::change::{Change, OWNER_ROLE, owner_count};
use super::members::{MemberView, members_and_catalog, members_by_id, replace_grant};
use super::proof::OrgAccess;
use super::schema::memberships;
use super::verification::cancel_orphaned_changes;
use super::{Actor, Conn, Store, audit, both};
use crate::domain::{Action, ChildName, Etag, Names};
use crate::error::{Error, Result};

/// What a previous owner becomes after transferring ownership.
const ADMIN_ROLE: &str = "admin";

impl Change {
    /// Refuses to change or remove a member who holds more than the caller.
    fn ensure_can_manage(&self, target: &MemberView) -> Result<()> {
        self.ensure_can_grant(
            &target.access.effective,
            &format!("changing or removing {}", target.name()),
        )
    }

    /// The last step of every change that can take an owner away.
    async fn ensure_owner_remains(&self, conn: &mut Conn) -> Result<()> {
        if owner_count(conn, self.org.id).await? > 0 {
            return Ok(());
        }
        // An owner who leaves none was the last one; anyone else took away others'.
        let state = if self.is_owner() {
            format!("you are the last owner of {}", self.org.described())
        } else {
            format!(
                "this change would leave {} without an owner",
                self.org.described()
            )
        };
        Err(Error::precondition(
            "LAST_OWNER",
            self.org.name(),
            format!(
                "{state}, and an organization keeps at least one: first make another member an owner \
                 (TransferOwnership, or UpdateMember with the owner role), or delete the organization instead"
            ),
        ))
    }
}

/// A change of one member's roles and/or permissions; `None` keeps a set.
#[derive(Debug, Clone)]
pub struct MemberUpdate {
    pub user_id: Uuid,
    pub roles: Option<Names>,
    pub permissions: Option<Names>,
    pub etag: Option<Etag>,
    /// The request field the update came from, for error messages.
    pub field: String,
}

impl Store {
    /// Applies all `updates` or none, and audits them as one `action`.
    pub async fn update_members(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        updates: Vec<MemberUpdate>,
        action: Action,
    ) -> Result<Vec<MemberView>> {
        let org_id = access.org().id;
        let ids: &Vec<Uuid> = &updates.iter().map(|u| u.user_id).collect();
        let updates = &updates;
        self.change_reading(
            access,
            actor,
            |conn| members_and_catalog(conn, org_id, ids).scope_boxed(),
            |conn, (change, (current, catalog))| {
                async move {
                    let mut audited = Vec::new();
                    // Only taking the owner role from an owner can leave none.
                    let mut unseats_an_owner = false;
                    // Only a member who loses a permission can orphan an email change.
                    let mut takes_away = false;
                    for update in updates {
                        let target = &current[&update.user_id];
                        // Before the etag: its refusal shows the current one.
                        change.ensure_can_manage(target)?;
                        if let Some(etag) = update.etag
                            && etag != target.etag()
                        {
                            return Err(Error::Aborted(format!(
                                "member {} changed since etag {etag} was read (it is now {}); get it again and retry",
                                target.name(),
                                target.etag()
                            )));
                        }
                        catalog.ensure_known(
                            &update.field,
                            update.roles.as_ref(),
                            update.permissions.as_ref(),
                        )?;
                        let role_names = update
                            .roles
                            .clone()
                            .unwrap_or_else(|| Names(target.access.roles.iter().cloned().collect()));
                        let permission_names = update.permissions.clone().unwrap_or_else(|| {
                            Names(target.access.extra_permissions.iter().cloned().collect())
                        });
                        if role_names.is_empty() && permission_names.is_empty() {
                            return Err(Error::invalid(
                                update.field.clone(),
                                "a member needs at least one role or permission; to take everything away, remove the member",
                            ));
                        }
                        if let Some(roles) = &update.roles {
                            change.ensure_can_grant_roles(roles)?;
                            unseats_an_owner |= !roles.0.contains(OWNER_ROLE)
                                && target.access.roles.iter().any(|r| r == OWNER_ROLE);
                        }
                        let granted = catalog.effective(&role_names, &permission_names);
                        change.ensure_can_grant(&granted, &format!("updating {}", target.name()))?;
                        takes_away |= !target.access.effective.is_subset(&granted);
                        audited.push(serde_json::json!({
                            "member": target.name(),
                            "roles": role_names.to_vec(),
                            "extra_permissions": permission_names.to_vec(),
                        }));
                    }
                    let target = match updates.as_slice() {
                        [single] => current[&single.user_id].name(),
                        _ => change.org.name(),
                    };
                    let shared: &Conn = conn;
                    let grants = async {
                        let grants = updates.iter().map(|update| {
                            replace_grant(
                                shared,
                                org_id,
                                update.user_id,
                                update.roles.as_ref(),
                                update.permissions.as_ref(),
                            )
                        });
                        join_all(grants).await.into_iter().collect::<Result<Vec<_>>>()
                    };
                    let mut details = serde_json::json!({ "members": audited });
                    let record = |details| audit::record(shared, actor, Some(org_id), action, &target, details);
                    let states = if takes_away {
                        // One after the other: the cancellation reads what the grants left.
                        let states = grants.await?;
                        cancel_orphaned_changes(shared, org_id, &mut details).await?;
                        record(details).await?;
                        states
                    } else {
                        // Writes to disjoint rows go out together: one round trip.
                        both(grants, record(details)).await?.0
                    };
                    if unseats_an_owner {
                        change.ensure_owner_remains(conn).await?;
                    }
                    Ok(states
                        .into_iter()
                        .zip(ids)
                        .map(|(now, id)| now.applied_to(current[id].clone(), &catalog))
                        .collect())
                }
                .scope_boxed()
        },
        )
        .await
    }

    /// Removes all of `user_ids` or none, and audits them as one `action`.
    pub async fn remove_members(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        user_ids: &[Uuid],
        action: Action,
    ) -> Result<()> {
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                let current = members_by_id(conn, org_id, user_ids).await?;
                for id in user_ids {
                    change.ensure_can_manage(&current[id])?;
                }
                diesel::delete(
                    memberships::table
                        .filter(memberships::org_id.eq(org_id))
                        .filter(memberships::user_id.eq_any(user_ids)),
                )
                .execute(conn)
                .await?;
                change.ensure_owner_remains(conn).await?;
                let names: Vec<String> = user_ids.iter().map(|id| current[id].name()).collect();
                let target = match names.as_slice() {
                    [single] => single.clone(),
                    _ => change.org.name(),
                };
                let mut details = serde_json::json!({ "members": names });
                cancel_orphaned_changes(conn, org_id, &mut details).await?;
                audit::record(conn, actor, Some(org_id), action, &target, details).await
            }
            .scope_boxed()
        })
        .await
    }

    /// The caller leaves the organization.
    pub async fn leave_org(&self, actor: &Actor, access: &OrgAccess) -> Result<()> {
        actor.ensure_signed_in("leaving an organization")?;
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                if change.org.personal_owner_id == Some(change.actor_id) {
                    return Err(Error::precondition(
                        "PERSONAL_ORGANIZATION",
                        change.org.name(),
                        "you cannot leave your personal organization",
                    ));
                }
                diesel::delete(memberships::table.find((org_id, change.actor_id)))
                    .execute(conn)
                    .await?;
                change.ensure_owner_remains(conn).await?;
                let mut details = serde_json::json!({ "roles": change.actor.roles });
                cancel_orphaned_changes(conn, org_id, &mut details).await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::MemberLeave,
                    &ChildName::name_of(org_id, ChildName::MEMBERS, change.actor_id),
                    details,
                )
                .await
            }
            .scope_boxed()
        })
        .await
    }

    /// Makes `new_owner` an owner; the caller's owner role, if any, becomes admin.
    /// Returns the new owner and the caller afterwards.
    pub async fn transfer_ownership(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        new_owner: Uuid,
    ) -> Result<(MemberView, MemberView)> {
        actor.ensure_signed_in("transferring ownership")?;
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                change.ensure_owner("transfer ownership")?;
                if new_owner == change.actor_id {
                    return Err(Error::invalid(
                        "new_owner",
                        "name another member: you cannot transfer ownership to yourself",
                    ));
                }
                let (mut found, catalog) = members_and_catalog(conn, org_id, &[new_owner]).await?;
                let target = found
                    .remove(&new_owner)
                    .expect("members_and_catalog checked it");
                let owner = Names([OWNER_ROLE.to_owned()].into());
                let owner_permissions = catalog.effective(&owner, &Names::default());
                change.ensure_can_grant(&owner_permissions, "making someone an owner")?;
                let mut target_roles = Names(target.access.roles.iter().cloned().collect());
                target_roles.0.insert(OWNER_ROLE.to_owned());
                replace_grant(conn, org_id, new_owner, Some(&target_roles), None).await?;
                {
                    let mut own_roles = Names(change.actor.roles.iter().cloned().collect());
                    own_roles.0.remove(OWNER_ROLE);
                    own_roles.0.insert(ADMIN_ROLE.to_owned());
                    replace_grant(conn, org_id, change.actor_id, Some(&own_roles), None).await?;
                }
                change.ensure_owner_remains(conn).await?;
                // The former owner is an admin now, which may hold less.
                let mut details = serde_json::json!({
                    "from": ChildName::name_of(org_id, ChildName::MEMBERS, change.actor_id),
                    "to": target.name(),
                });
                cancel_orphaned_changes(conn, org_id, &mut details).await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::OrganizationTransferOwnership,
                    &change.org.name(),
                    details,
                )
                .await?;
                let mut after = members_by_id(conn, org_id, &[new_owner, change.actor_id]).await?;
                Ok((
                    after.remove(&new_owner).expect("loaded"),
                    after.remove(&change.actor_id).expect("loaded"),
                ))
            }
            .scope_boxed()
        })
        .await
    }
}
