//! The invitee's answer to an invitation: accepted or declined with the emailed
//! token, by the user whose verified address it was sent to, under the
//! organization lock (as every membership change), and only while whoever sent
//! it may still grant what it grants.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::catalog::Catalog;
use super::change::OWNER_ROLE;
use super::invitations::{
    InvitationRow, InvitationState, InvitationView, close, lock_invitation, person,
};
use super::limits::{Joining, ensure_member_room};
use super::members::{self, MemberView, insert_member};
use super::org_row::{OrgRow, lock_org};
use super::orgs::{OrgLimits, Whose, lock_org_room, too_many_orgs};
use super::schema::{invitations, users};
use super::standing::access_in;
use super::users::User;
use super::{Actor, Conn, Store, audit, outbox};
use crate::domain::{Action, Names, Permission, Secret};
use crate::error::{Error, Result};

/// Opens the invitation behind `token` for `user`, who must be its invitee: locks
/// its organization and then the invitation (the order every membership change
/// uses), and checks it is still open.
async fn claim(conn: &mut Conn, user: &User, token: &str) -> Result<(OrgRow, InvitationRow)> {
    let hash = Secret::hash(token);
    let invalid = || {
        Error::NotFound(
            "this invitation link is invalid or was replaced by a newer one; use the link of the latest invitation email"
                .into(),
        )
    };
    let (org_id, id): (Uuid, Uuid) = invitations::table
        .filter(invitations::token_hash.eq(&hash))
        .select((invitations::org_id, invitations::id))
        .first(conn)
        .await
        .optional()?
        .ok_or_else(invalid)?;
    let org = lock_org(conn, org_id).await?;
    let invitation = lock_invitation(conn, org_id, id).await?;
    // A resend may have replaced the token while we waited for the lock.
    let current: Vec<u8> = invitations::table
        .find(id)
        .select(invitations::token_hash)
        .first(conn)
        .await?;
    if current != hash {
        return Err(invalid());
    }
    match user.verified_email() {
        None => {
            return Err(Error::PermissionDenied(format!(
                "your email address {} is not verified; verify it with your identity provider, then use the link again",
                user.row.email
            )));
        }
        Some(email) if email.as_str() != invitation.email => {
            return Err(Error::PermissionDenied(
                "this invitation was sent to another email address; sign in with the invited address to answer it"
                    .into(),
            ));
        }
        Some(_) => {}
    }
    // Only the invitee learns anything about the organization.
    org.ensure_live()?;
    invitation.ensure_open(&org)?;
    Ok((org, invitation))
}

/// An invitation grants what its inviter may grant *now*: one who was removed,
/// demoted or lost `inviting` (the permission CreateInvitation declares) since
/// cannot bring anyone in through it.
async fn ensure_inviter_still_grants(
    conn: &mut Conn,
    org: &OrgRow,
    invitation: &InvitationRow,
    roles: &Names,
    permissions: &Names,
    inviting: &Permission,
) -> Result<()> {
    let inviter = match invitation.inviter_id {
        Some(inviter) => access_in(conn, inviter, &[org.id]).await?.remove(&org.id),
        None => None,
    };
    let granted = Catalog::load(conn).await?.effective(roles, permissions);
    let still_valid = inviter.is_some_and(|access| {
        access.allows(inviting)
            && granted.is_subset(&access.effective)
            && (!roles.0.contains(OWNER_ROLE) || access.roles.iter().any(|r| r == OWNER_ROLE))
    });
    if still_valid {
        return Ok(());
    }
    Err(Error::precondition(
        "INVITER_CANNOT_GRANT",
        invitation.name(),
        format!(
            "whoever sent this invitation may no longer grant this access; ask a member who manages {} for a new invitation",
            org.described()
        ),
    ))
}

/// The address of the user who sent an invitation, if they still exist.
async fn inviter_email(conn: &mut Conn, invitation: &InvitationRow) -> Result<Option<String>> {
    let Some(inviter) = invitation.inviter_id else {
        return Ok(None);
    };
    Ok(users::table
        .find(inviter)
        .filter(users::email_verified)
        .select(users::email)
        .first(conn)
        .await
        .optional()?)
}

impl Store {
    /// `user` accepts the invitation behind `token` and becomes a member, within the
    /// organization's member limit and their own organization limit, if its
    /// inviter still holds `inviting`. No `OrgAccess` here: the invitee is not a
    /// member yet; the invitation's organization is locked (`claim`) and its
    /// inviter's standing read under that lock instead.
    pub async fn accept_invitation(
        &self,
        actor: &Actor,
        user: &User,
        token: &str,
        limits: OrgLimits,
        inviting: &Permission,
    ) -> Result<MemberView> {
        self.write(|conn| {
            async move {
                let (org, invitation) = claim(conn, user, token).await?;
                let user_id = user.row.id;
                if members::is_member(conn, org.id, user_id).await? {
                    return Err(Error::AlreadyExists(format!(
                        "you are already a member of {}",
                        org.described()
                    )));
                }
                ensure_member_room(conn, &org, Joining::Accepting).await?;
                let room = lock_org_room(conn, user_id, limits).await?;
                if room.is_full() {
                    return Err(too_many_orgs(Whose::Yours, user_id, room));
                }
                let (roles, permissions) = invitation.grant();
                ensure_inviter_still_grants(
                    conn,
                    &org,
                    &invitation,
                    &roles,
                    &permissions,
                    inviting,
                )
                .await?;
                let member = insert_member(
                    conn,
                    org.id,
                    user_id,
                    invitation.inviter_id,
                    &roles,
                    &permissions,
                )
                .await?;
                close(
                    conn,
                    invitation.id,
                    InvitationState::Accepted,
                    Some(user_id),
                )
                .await?;
                outbox::enqueue(
                    conn,
                    &invitation.email,
                    &format!("You joined {}", org.display_name),
                    &format!(
                        "You are now a member of the organization \"{}\" with: {}.",
                        org.display_name,
                        member
                            .access
                            .effective
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .await?;
                if let Some(inviter) = inviter_email(conn, &invitation).await? {
                    outbox::enqueue(
                        conn,
                        &inviter,
                        &format!("{} accepted your invitation", user.row.email),
                        &format!(
                            "{} accepted your invitation and joined the organization \"{}\".",
                            person(user),
                            org.display_name
                        ),
                    )
                    .await?;
                }
                audit::record(
                    conn,
                    actor,
                    Some(org.id),
                    Action::InvitationAccept,
                    &invitation.name(),
                    serde_json::json!({ "member": member.name(), "roles": invitation.roles }),
                )
                .await?;
                Ok(member)
            }
            .scope_boxed()
        })
        .await
    }

    /// `user` declines the invitation behind `token`; the inviter is told. No
    /// `OrgAccess`: the invitee answers for themself, and grants nothing.
    pub async fn decline_invitation(
        &self,
        actor: &Actor,
        user: &User,
        token: &str,
    ) -> Result<InvitationView> {
        self.write(|conn| {
            async move {
                let (org, invitation) = claim(conn, user, token).await?;
                let declined = close(conn, invitation.id, InvitationState::Declined, None).await?;
                if let Some(inviter) = inviter_email(conn, &invitation).await? {
                    outbox::enqueue(
                        conn,
                        &inviter,
                        &format!("{} declined your invitation", declined.email),
                        &format!(
                            "{} declined your invitation to the organization \"{}\".",
                            declined.email, org.display_name
                        ),
                    )
                    .await?;
                }
                audit::record(
                    conn,
                    actor,
                    Some(org.id),
                    Action::InvitationDecline,
                    &declined.name(),
                    serde_json::json!({ "email": declined.email }),
                )
                .await?;
                Ok(InvitationView {
                    row: declined,
                    org_display_name: org.display_name,
                })
            }
            .scope_boxed()
        })
        .await
    }
}
