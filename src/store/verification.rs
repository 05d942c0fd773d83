//! Pending email changes that a link confirms: an organization's contact email,
//! a billing profile's billing email. What both share: the settings of their
//! messages, who asked for a change and with which permission, and the rule
//! that a change holds only while its requester still holds that permission.
//! Below both aggregates, so that each (and the member changes that can cancel
//! them) can take it without importing the other.

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::change::Change;
use super::proof::OrgAccess;
use super::standing::{access_in, with_implied};
use super::{Conn, KeepPrepared};
use crate::domain::Permission;
use crate::error::{Error, Result};

/// Settings for email verification messages.
#[derive(Debug, Clone)]
pub struct ContactVerification {
    pub ttl: Duration,
    /// The link in the message is this URL followed by the token.
    pub link_prefix: String,
}

/// Who asks for an email change, and the permission that lets them: the
/// change holds only while they still hold it.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: Uuid,
    pub permission: Permission,
}

impl Requester {
    /// The caller of `change`, admitted by `access` with the permission its
    /// method declares.
    pub(super) fn of(change: &Change, access: &OrgAccess) -> Result<Self> {
        let permission = access.permission().cloned().ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "an email change needs a method that declares a permission"
            ))
        })?;
        Ok(Requester {
            user_id: change.actor_id,
            permission,
        })
    }
}

/// The refusal of a link that matches no pending change.
pub(super) fn link_not_valid() -> Error {
    Error::NotFound(
        "this verification link is not valid: it was already used, a newer change replaced it, \
         or the change was cancelled because whoever asked for it can no longer make it"
            .into(),
    )
}

/// Refuses to confirm a change of the `address` (e.g. "billing email") of
/// `org_id` whose requester no longer holds `permission` there: removed,
/// demoted, or their role no longer grants it. Read under the organization's
/// lock, so no member change can slip between the check and the commit.
pub(super) async fn ensure_requester_still_may(
    conn: &Conn,
    org_id: Uuid,
    requested_by: Uuid,
    permission: &str,
    address: &str,
) -> Result<()> {
    let standing = access_in(conn, requested_by, &[org_id])
        .await?
        .remove(&org_id);
    if standing.is_some_and(|access| access.allows(permission)) {
        return Ok(());
    }
    // The link's holder need not be a member: the organization goes unnamed.
    Err(Error::precondition(
        "REQUESTER_NOT_PERMITTED",
        "token",
        format!(
            "whoever asked for this change no longer holds permission '{permission}' in the organization, \
             so it cannot be confirmed; ask a member who holds it to change the {address} again"
        ),
    ))
}

/// The permissions user `v.requested_by` holds in organization `v.org_id`,
/// with what they imply: a query of one column. A macro so that queries can
/// `concat!` it.
macro_rules! requester_holds {
    () => {
        with_implied!(
            "SELECT rp.permission FROM membership_roles r
               JOIN role_permissions rp ON rp.role = r.role
              WHERE r.org_id = v.org_id AND r.user_id = v.requested_by
             UNION ALL
             SELECT g.permission FROM membership_permissions g
              WHERE g.org_id = v.org_id AND g.user_id = v.requested_by"
        )
    };
}

/// Cancels the pending email changes of organization `$1` whose requesters no
/// longer hold the permission they asked with, clearing the pending address
/// (and so bumping the etag) of what each was to change.
const CANCEL_ORPHANED: &str = concat!(
    "WITH contact AS (
         DELETE FROM contact_email_verifications v
          WHERE v.org_id = $1 AND v.permission NOT IN (",
    requester_holds!(),
    ") RETURNING v.org_id, v.email
     ), contact_cleared AS (
         UPDATE organizations o
            SET pending_contact_email = NULL, revision = o.revision + 1,
                updated_at = CURRENT_TIMESTAMP
           FROM contact c
          WHERE o.id = c.org_id AND o.pending_contact_email = c.email
     ), billing AS (
         DELETE FROM billing_email_verifications v
          WHERE v.org_id = $1 AND v.permission NOT IN (",
    requester_holds!(),
    ") RETURNING v.org_id, v.email
     ), billing_cleared AS (
         UPDATE billing_profiles p
            SET pending_billing_email = NULL, revision = p.revision + 1,
                updated_at = CURRENT_TIMESTAMP
           FROM billing b
          WHERE p.org_id = b.org_id AND p.pending_billing_email = b.email
     )
     SELECT EXISTS (SELECT 1 FROM contact) AS contact_email,
            EXISTS (SELECT 1 FROM billing) AS billing_email"
);

#[derive(QueryableByName)]
struct Cancelled {
    #[diesel(sql_type = Bool)]
    contact_email: bool,
    #[diesel(sql_type = Bool)]
    billing_email: bool,
}

/// After a member change of organization `org_id` (a removal, a leave, new
/// roles or grants), cancels the email changes that their requesters can no
/// longer make, in the same transaction; `details`, the change's audit record,
/// then names them (`cancelled_changes`).
pub(super) async fn cancel_orphaned_changes(
    conn: &Conn,
    org_id: Uuid,
    details: &mut serde_json::Value,
) -> Result<()> {
    let cancelled: Cancelled = diesel::sql_query(CANCEL_ORPHANED)
        .bind::<SqlUuid, _>(org_id)
        .prepared()
        .get_result(&mut &*conn)
        .await?;
    let fields: Vec<&str> = [
        ("contact_email", cancelled.contact_email),
        ("billing_email", cancelled.billing_email),
    ]
    .into_iter()
    .filter_map(|(field, was)| was.then_some(field))
    .collect();
    if !fields.is_empty() {
        details["cancelled_changes"] = serde_json::json!(fields);
    }
    Ok(())
}
