//! The one way a caller's change of an organization starts: lock the
//! organization's row, re-read the caller's standing under that lock and check
//! it again against what the policy layer proved (`OrgAccess`). The layer
//! checked before the transaction; a concurrent change (a demotion, a removal, a
//! deletion) may have committed since, and the organization's lock orders this
//! change after it. Every change of one organization then runs one at a time,
//! on whichever replica, and each sees the outcome of the one before.

use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::{ScopedBoxFuture, ScopedFutureExt};
use uuid::Uuid;

use super::org_row::{OrgRow, lock_org};
use super::proof::{OrgAccess, lacks_permission};
use super::schema::{api_tokens, membership_roles};
use super::standing::{MemberAccess, access_in};
use super::{Actor, Conn, Store};
use crate::domain::{Names, Permission, count};
use crate::error::{Error, Result};

/// The role that owns an organization; every organization keeps at least one holder.
pub const OWNER_ROLE: &str = "owner";

/// How many members of `org_id` hold the owner role now.
pub(super) async fn owner_count(conn: &mut Conn, org_id: Uuid) -> Result<i64> {
    Ok(membership_roles::table
        .filter(membership_roles::org_id.eq(org_id))
        .filter(membership_roles::role.eq(OWNER_ROLE))
        .count()
        .get_result(conn)
        .await?)
}

/// A change in progress: the organization is locked until commit and `actor` is
/// the caller's standing, read under that lock.
pub(super) struct Change {
    pub org: OrgRow,
    pub actor_id: Uuid,
    pub actor: MemberAccess,
}

/// What the caller must still hold in an organization, read under its lock.
pub(super) struct Demand<'a> {
    pub permission: Option<&'a Permission>,
    pub allows_deleted: bool,
}

impl<'a> From<&'a OrgAccess> for Demand<'a> {
    /// Exactly what the policy layer checked.
    fn from(access: &'a OrgAccess) -> Self {
        Demand {
            permission: access.permission(),
            allows_deleted: access.allows_deleted(),
        }
    }
}

/// The caller's standing `found` in the locked `org`, checked as the policy
/// layer checks it: a member (else NOT_FOUND, as for a stranger), within an API
/// token's limit, live unless `demand` admits a deleted organization, holding
/// the demanded permission.
pub(super) fn recheck(
    org: OrgRow,
    found: Option<MemberAccess>,
    actor: &Actor,
    actor_id: Uuid,
    demand: Demand<'_>,
) -> Result<Change> {
    let not_found = || Error::NotFound(format!("organization {} not found", org.name()));
    if !actor.reaches(org.id) {
        return Err(not_found());
    }
    let mut access = found.ok_or_else(not_found)?;
    // Only now: whether it is deleted is for its members to learn.
    if !demand.allows_deleted {
        org.ensure_live()?;
    }
    // Through an API token, the caller holds only what the token carries.
    if let Some(limit) = &actor.token {
        access.limit_to(limit);
    }
    if let Some(permission) = demand.permission
        && !access.allows(permission)
    {
        return Err(lacks_permission(&org, &access, permission, None));
    }
    Ok(Change {
        org,
        actor_id,
        actor: access,
    })
}

/// Refuses a caller whose API token was revoked or expired after the policy
/// layer admitted it (while the call waited for the lock, say); one query, and
/// only for callers through a token.
pub(super) async fn token_still_works(conn: &Conn, actor: &Actor) -> Result<()> {
    let Some(token) = &actor.token else {
        return Ok(());
    };
    let works: Option<Option<bool>> = api_tokens::table
        .find(token.token_id)
        .select(
            api_tokens::revoked_at.is_null().and(
                api_tokens::expires_at
                    .is_null()
                    .or(api_tokens::expires_at.gt(diesel::dsl::now)),
            ),
        )
        .get_result(&mut &*conn)
        .await
        .optional()?;
    if works == Some(Some(true)) {
        return Ok(());
    }
    Err(Error::Unauthenticated(
        "this API token was revoked or expired while the call waited".into(),
    ))
}

/// The calling user; every caller in an organization is one (the policy layer
/// admits no service there).
pub(super) fn actor_id(actor: &Actor) -> Result<Uuid> {
    actor.user_id.ok_or_else(|| {
        Error::PermissionDenied("changing an organization needs a user token".into())
    })
}

/// Locks the organization and re-reads the caller's standing, with `also` (a
/// read on the same connection) sent in the same round trip. PostgreSQL runs the
/// statements in the order they arrive, each with a snapshot taken when it
/// starts, so the standing and `also` are still read after the lock is held, as
/// if sent one by one. Their results count only once the organization and the
/// caller's standing are known good, so a caller who lost their standing learns
/// nothing from `also`.
async fn begin_change_reading<T>(
    conn: &Conn,
    access: &OrgAccess,
    actor: &Actor,
    also: impl Future<Output = Result<T>>,
) -> Result<(Change, T)> {
    let org_id = access.org().id;
    let actor_id = actor_id(actor)?;
    let (org, standing, token, also) = futures_util::future::join4(
        lock_org(conn, org_id),
        access_in(conn, actor_id, &[org_id]),
        token_still_works(conn, actor),
        also,
    )
    .await;
    token?;
    let change = recheck(
        org?,
        standing?.remove(&org_id),
        actor,
        actor_id,
        access.into(),
    )?;
    Ok((change, also?))
}

impl Store {
    /// A change of the organization `access` proves the caller may act in: `op`
    /// runs in a transaction that `begin_change_reading` opened (the lock, the
    /// caller's standing and `also`'s read sent together with BEGIN), and goes on
    /// from the change and what `also` read.
    pub(super) async fn change_reading<'a, R, T, A, F>(
        &self,
        access: &'a OrgAccess,
        actor: &'a Actor,
        mut also: A,
        op: F,
    ) -> Result<T>
    where
        R: Send + 'a,
        T: Send + 'a,
        A: for<'c> FnMut(&'c Conn) -> ScopedBoxFuture<'a, 'c, Result<R>> + Send + 'a,
        F: for<'c> FnMut(&'c mut Conn, (Change, R)) -> ScopedBoxFuture<'a, 'c, Result<T>>
            + Send
            + 'a,
    {
        self.write_from(
            move |conn| begin_change_reading(conn, access, actor, also(conn)).scope_boxed(),
            op,
        )
        .await
    }

    /// `change_reading` with nothing more to read.
    pub(super) async fn change<'a, T, F>(
        &self,
        access: &'a OrgAccess,
        actor: &'a Actor,
        mut op: F,
    ) -> Result<T>
    where
        T: Send + 'a,
        F: for<'c> FnMut(&'c mut Conn, Change) -> ScopedBoxFuture<'a, 'c, Result<T>> + Send + 'a,
    {
        self.change_reading(
            access,
            actor,
            |_| async { Ok(()) }.scope_boxed(),
            move |conn, (change, ())| op(conn, change),
        )
        .await
    }
}

impl Change {
    /// Refuses to hand out `granted` unless the caller holds all of it.
    pub fn ensure_can_grant(&self, granted: &BTreeSet<String>, what: &str) -> Result<()> {
        let beyond: Vec<&str> = granted
            .difference(&self.actor.effective)
            .map(String::as_str)
            .collect();
        if beyond.is_empty() {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{what} would grant {} you do not hold yourself in {}: {}",
            count(beyond.len() as i64, "permission"),
            self.org.described(),
            beyond.join(", ")
        )))
    }

    /// Only an owner makes someone an owner (holding every permission an owner
    /// has through extra grants is not enough).
    pub fn ensure_can_grant_roles(&self, roles: &Names) -> Result<()> {
        if roles.0.contains(OWNER_ROLE) {
            self.ensure_owner("make someone an owner")?;
        }
        Ok(())
    }

    /// Refuses `what`, which only an owner may do, to a caller who is none.
    pub fn ensure_owner(&self, what: &str) -> Result<()> {
        if self.is_owner() {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "only an owner can {what}, and you are not an owner of {}",
            self.org.described()
        )))
    }

    /// Whether the caller holds the owner role: a role, not a permission, for
    /// the few rules that only an owner passes.
    pub fn is_owner(&self) -> bool {
        self.actor.roles.iter().any(|r| r == OWNER_ROLE)
    }
}
