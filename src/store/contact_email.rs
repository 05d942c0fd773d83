//! An organization's contact email: a new address waits, pending, until the
//! link sent to it is confirmed, and only while whoever asked for it may still
//! make the change (`verification`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::org_row::{OrgRow, lock_org, touch};
use super::schema::{contact_email_verifications, organizations};
use super::verification::{
    ContactVerification, Requester, ensure_requester_still_may, link_not_valid,
};
use super::{Actor, Conn, KeepPrepared, Store, audit, outbox};
use crate::domain::{Action, Email, Secret};
use crate::error::{Error, Result};

/// Replaces any pending contact-email change of `org` by one to `email` that
/// `requester` asks for, and queues the verification message in the same
/// transaction.
pub(super) async fn start_contact_email_change(
    conn: &mut Conn,
    org: &OrgRow,
    email: &Email,
    requester: &Requester,
    settings: &ContactVerification,
) -> Result<()> {
    set_pending_contact_email(conn, org.id, Some(email)).await?;
    let secret = Secret::generate();
    let expires_at = Utc::now() + settings.ttl;
    diesel::insert_into(contact_email_verifications::table)
        .values((
            contact_email_verifications::token_hash.eq(&secret.hash),
            contact_email_verifications::org_id.eq(org.id),
            contact_email_verifications::email.eq(email.as_str()),
            contact_email_verifications::expires_at.eq(expires_at),
            contact_email_verifications::requested_by.eq(requester.user_id),
            contact_email_verifications::permission.eq(&*requester.permission),
        ))
        .execute(conn)
        .await?;
    let body = format!(
        "Someone asked to make {email} the contact address of the organization \"{}\".\n\
         To confirm, open {}{}\nThe link expires at {expires_at}. If this was not you, ignore this message.",
        org.display_name, settings.link_prefix, secret.token
    );
    outbox::enqueue(
        conn,
        email.as_str(),
        "Confirm your organization's contact email",
        &body,
    )
    .await
}

/// Sets (or clears) the address awaiting verification; any earlier link dies.
pub(super) async fn set_pending_contact_email(
    conn: &mut Conn,
    org_id: Uuid,
    email: Option<&Email>,
) -> Result<()> {
    diesel::delete(
        contact_email_verifications::table.filter(contact_email_verifications::org_id.eq(org_id)),
    )
    .execute(conn)
    .await?;
    diesel::update(organizations::table.find(org_id))
        .set(organizations::pending_contact_email.eq(email.map(Email::as_str)))
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    /// Makes the address of a pending contact-email change the contact email.
    /// No `OrgAccess`: the emailed token, not a standing, is what authorizes it.
    pub async fn verify_contact_email(&self, actor: &Actor, token: &str) -> Result<OrgRow> {
        let hash = Secret::hash(token);
        let hash = &hash;
        self.write(|conn| {
            async move {
                let (org_id, email, expires_at, requested_by, permission): (Uuid, String, DateTime<Utc>, Uuid, String) = contact_email_verifications::table
                    .find(hash)
                    .select((
                        contact_email_verifications::org_id,
                        contact_email_verifications::email,
                        contact_email_verifications::expires_at,
                        contact_email_verifications::requested_by,
                        contact_email_verifications::permission,
                    ))
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(link_not_valid)?;
                let org = lock_org(conn, org_id).await?;
                if org.deleted_at.is_some() || org.pending_contact_email.as_deref() != Some(email.as_str()) {
                    return Err(link_not_valid());
                }
                ensure_requester_still_may(conn, org_id, requested_by, &permission, "contact email").await?;
                if expires_at < Utc::now() {
                    return Err(Error::precondition(
                        "TOKEN_EXPIRED",
                        "token",
                        "this verification token has expired; change the contact email again to get a new one",
                    ));
                }
                set_pending_contact_email(conn, org_id, None).await?;
                diesel::update(organizations::table.find(org_id))
                    .set(organizations::contact_email.eq(&email))
                    .prepared()
                    .execute(conn)
                    .await?;
                let updated = touch(conn, org_id).await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::OrganizationContactEmailVerify,
                    &updated.name(),
                    serde_json::json!({ "contact_email": email }),
                )
                .await?;
                Ok(updated)
            }.scope_boxed()
        })
        .await
    }
}
