//! Account deletion: in one transaction the user leaves every organization,
//! their personal organization closes with its final invoice, and the account
//! becomes a tombstone whose subject no sign-in finds again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::change::OWNER_ROLE;
use super::closing;
use super::org_row::OrgRow;
use super::proof::AccountAccess;
use super::schema::{membership_roles, memberships, organizations, users};
use super::standing::access_in;
use super::verification::cancel_orphaned_changes;
use super::{Actor, Conn, KeepPrepared, Store, audit};
use crate::domain::{Action, UserRef, count};
use crate::error::{Error, Result};

impl Store {
    /// Deletes the account `access` names, unless its user is the last owner of
    /// a team organization (LAST_OWNER, naming each). The user leaves every
    /// organization (their API tokens then read as deactivated), their personal
    /// organization closes as `DeleteOrganization` closes one, to be purged after
    /// `retention`, and the account keeps only its id: its subject is detached,
    /// so a later sign-in starts a fresh user, and its profile is erased. Each
    /// organization records the departure in its activity.
    pub async fn delete_user(
        &self,
        actor: &Actor,
        access: &AccountAccess,
        retention: Duration,
    ) -> Result<()> {
        let user_id = access.user_id();
        let invoice_due = self.invoice_due;
        self.write(|conn| {
            async move {
                let locked = lock_orgs_of(conn, user_id).await?;
                lock_account(conn, user_id).await?;
                // Joining takes the user's lock (`lock_org_room`), so
                // the memberships are settled now; one that came before it, in an
                // organization not locked above, means starting again.
                let org_ids = org_ids_of(conn, user_id).await?;
                if org_ids.iter().any(|id| !locked.contains_key(id)) {
                    return Err(Error::SerializationConflict);
                }
                let orgs: Vec<&OrgRow> = org_ids.iter().map(|id| &locked[id]).collect();
                let last_owned = last_owned(conn, user_id, &orgs).await?;
                if !last_owned.is_empty() {
                    return Err(last_owner_of(actor, user_id, &last_owned));
                }
                let personal = orgs
                    .iter()
                    .find(|org| org.personal_owner_id == Some(user_id))
                    .ok_or_else(|| {
                        Error::Internal(anyhow::anyhow!(
                            "users/{user_id} has no personal organization"
                        ))
                    })?;
                let mut standing = access_in(conn, user_id, &org_ids).await?;
                detach(conn, user_id).await?;
                // After `detach`: a personal organization closes only with its account.
                let closed = closing::close(conn, actor, personal, retention, invoice_due).await?;
                diesel::delete(memberships::table.filter(memberships::user_id.eq(user_id)))
                    .execute(conn)
                    .await?;
                let target = UserRef::name_of(user_id);
                for org in &orgs {
                    let roles = standing
                        .remove(&org.id)
                        .map(|s| s.roles)
                        .unwrap_or_default();
                    let mut details = if org.id == personal.id {
                        serde_json::json!({ "roles": roles, "closed": closed.details() })
                    } else {
                        serde_json::json!({ "roles": roles })
                    };
                    // An email change the user asked for lapses with their membership.
                    cancel_orphaned_changes(conn, org.id, &mut details).await?;
                    audit::record(
                        conn,
                        actor,
                        Some(org.id),
                        Action::UserDelete,
                        &target,
                        details,
                    )
                    .await?;
                }
                Ok(())
            }
            .scope_boxed()
        })
        .await
    }
}

/// The organizations `user_id` belongs to, locked in id order (as every change
/// holding several organizations locks them, so that none deadlock), by id.
async fn lock_orgs_of(conn: &mut Conn, user_id: Uuid) -> Result<BTreeMap<Uuid, OrgRow>> {
    let rows: Vec<OrgRow> = organizations::table
        .filter(
            organizations::id.eq_any(
                memberships::table
                    .filter(memberships::user_id.eq(user_id))
                    .select(memberships::org_id),
            ),
        )
        .order(organizations::id)
        .select(OrgRow::as_select())
        .for_update()
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|org| (org.id, org)).collect())
}

async fn org_ids_of(conn: &mut Conn, user_id: Uuid) -> Result<Vec<Uuid>> {
    Ok(memberships::table
        .filter(memberships::user_id.eq(user_id))
        .select(memberships::org_id)
        .order(memberships::org_id)
        .load(conn)
        .await?)
}

/// Locks the live account of `user_id`; NOT_FOUND if there is none (never
/// was, or deleted already).
async fn lock_account(conn: &mut Conn, user_id: Uuid) -> Result<()> {
    users::table
        .find(user_id)
        .filter(users::deleted_at.is_null())
        .select(users::id)
        .for_update()
        .first::<Uuid>(conn)
        .await
        .optional()?
        .map(drop)
        .ok_or_else(|| Error::NotFound(format!("user {} not found", UserRef::name_of(user_id))))
}

/// The live team organizations among `orgs` whose only owner is `user_id`,
/// read under their locks. A deleted one may lose its last owner: it is purged
/// in time, and without an owner it can no longer be restored.
async fn last_owned<'o>(
    conn: &mut Conn,
    user_id: Uuid,
    orgs: &[&'o OrgRow],
) -> Result<Vec<&'o OrgRow>> {
    let team: Vec<Uuid> = orgs
        .iter()
        .filter(|org| org.personal_owner_id.is_none() && org.deleted_at.is_none())
        .map(|org| org.id)
        .collect();
    let owners: Vec<(Uuid, Uuid)> = membership_roles::table
        .filter(membership_roles::org_id.eq_any(&team))
        .filter(membership_roles::role.eq(OWNER_ROLE))
        .select((membership_roles::org_id, membership_roles::user_id))
        .load(conn)
        .await?;
    let mut owners_of: BTreeMap<Uuid, BTreeSet<Uuid>> = BTreeMap::new();
    for (org_id, owner) in owners {
        owners_of.entry(org_id).or_default().insert(owner);
    }
    let only_owner = BTreeSet::from([user_id]);
    Ok(orgs
        .iter()
        .copied()
        .filter(|org| owners_of.get(&org.id) == Some(&only_owner))
        .collect())
}

/// The refusal to delete `user_id`'s account while they are the last owner of
/// `orgs`, naming each and how to pass it on; to the user themself, "you".
fn last_owner_of(actor: &Actor, user_id: Uuid, orgs: &[&OrgRow]) -> Error {
    let user = UserRef::name_of(user_id);
    let (account, who, owner) = if actor.user_id == Some(user_id) {
        (
            "your account".to_owned(),
            "you are",
            "you are its only owner".to_owned(),
        )
    } else {
        (
            format!("the account {user}"),
            "it is",
            format!("{user} is its only owner"),
        )
    };
    let listed: Vec<String> = orgs.iter().map(|org| org.described()).collect();
    Error::preconditions(
        "LAST_OWNER",
        orgs.iter().map(|org| (org.name(), owner.clone())).collect(),
        format!(
            "{account} cannot be deleted while {who} the last owner of {}: {}. \
             Each must keep an owner: make another member its owner (TransferOwnership) or \
             delete the organization (DeleteOrganization), then delete the account",
            count(orgs.len() as i64, "team organization"),
            listed.join(", ")
        ),
    )
}

/// Turns the account into a tombstone: no subject (a later sign-in with it
/// starts a fresh user) and no profile, only its id, which API tokens and the
/// activity trail still name.
async fn detach(conn: &mut Conn, user_id: Uuid) -> Result<()> {
    diesel::update(users::table.find(user_id))
        .set((
            users::subject.eq(None::<String>),
            users::deleted_at.eq(diesel::dsl::now),
            users::email.eq(""),
            users::email_verified.eq(false),
            users::display_name.eq(""),
            users::updated_at.eq(diesel::dsl::now),
        ))
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}
