//! Invitations: created, resent and revoked by members who manage the organization
//! (under the organization lock, like every membership change), and read; the
//! invitee's answer is `invitation_answers`'. Tokens are stored only as hashes;
//! each message goes through the outbox in the transaction that causes it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::catalog::Catalog;
use super::limits::{Joining, ensure_member_room};
use super::members::is_member_by_email;
use super::org_row::OrgRow;
use super::paging::newest_first_after;
use super::proof::OrgAccess;
use super::schema::{invitations, organizations};
use super::users::User;
use super::{Actor, Conn, KeepPrepared, Store, audit, outbox};
use crate::domain::{
    Action, ChildName, Email, Grant, Names, PageRequest, PageToken, Secret, count,
};
use crate::error::{Error, Result};

/// The least time between two sends of one invitation.
const RESEND_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Settings for invitation messages.
#[derive(Debug, Clone)]
pub struct InvitationSettings {
    /// How long a link stays valid.
    pub ttl: Duration,
    /// The link in the message is this URL followed by the token.
    pub link_prefix: String,
}

/// Where an invitation stands; `Expired` covers pending ones past their expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationState {
    Pending,
    Accepted,
    Declined,
    Revoked,
    Expired,
}

impl InvitationState {
    const STORED: [(&str, InvitationState); 5] = [
        ("pending", InvitationState::Pending),
        ("accepted", InvitationState::Accepted),
        ("declined", InvitationState::Declined),
        ("revoked", InvitationState::Revoked),
        ("expired", InvitationState::Expired),
    ];

    fn stored(self) -> &'static str {
        Self::STORED
            .iter()
            .find(|(_, state)| *state == self)
            .map(|(name, _)| *name)
            .expect("every state is listed")
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invitations, check_for_backend(diesel::pg::Pg))]
pub struct InvitationRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub roles: Vec<String>,
    pub extra_permissions: Vec<String>,
    state: String,
    pub inviter_id: Option<Uuid>,
    pub accepted_by: Option<Uuid>,
    pub send_count: i32,
    pub created_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

impl InvitationRow {
    /// Refuses a resend within `RESEND_INTERVAL` of the last send.
    fn ensure_resendable(&self, now: DateTime<Utc>) -> Result<()> {
        let next = self.sent_at + RESEND_INTERVAL;
        if now >= next {
            return Ok(());
        }
        let wait = (next - now).num_seconds() + 1;
        Err(Error::precondition(
            "RESEND_TOO_SOON",
            self.name(),
            format!(
                "this invitation was sent less than {} ago; it can be sent again in {}",
                count(RESEND_INTERVAL.num_seconds(), "second"),
                count(wait, "second")
            ),
        ))
    }

    pub fn name(&self) -> String {
        ChildName::name_of(self.org_id, ChildName::INVITATIONS, self.id)
    }

    pub fn state(&self) -> InvitationState {
        let stored = InvitationState::STORED
            .iter()
            .find(|(name, _)| *name == self.state)
            .map_or(InvitationState::Expired, |(_, state)| *state);
        match stored {
            InvitationState::Pending if self.expires_at <= Utc::now() => InvitationState::Expired,
            other => other,
        }
    }

    pub(super) fn grant(&self) -> (Names, Names) {
        (
            Names(self.roles.iter().cloned().collect()),
            Names(self.extra_permissions.iter().cloned().collect()),
        )
    }

    /// Refuses a closed or lapsed invitation to `org`, saying what can be done instead.
    pub(super) fn ensure_open(&self, org: &OrgRow) -> Result<()> {
        let (kind, state, next) = match self.state() {
            InvitationState::Pending => return Ok(()),
            InvitationState::Accepted => ("INVITATION_ACCEPTED", "was already accepted", ""),
            InvitationState::Declined => (
                "INVITATION_DECLINED",
                "was declined",
                "; ask a member who manages it for a new one",
            ),
            InvitationState::Revoked => (
                "INVITATION_REVOKED",
                "was revoked",
                "; ask a member who manages it for a new one",
            ),
            InvitationState::Expired => (
                "INVITATION_EXPIRED",
                "has expired",
                "; ask a member who manages it to resend it",
            ),
        };
        Err(Error::precondition(
            kind,
            self.name(),
            format!("this invitation to {} {state}{next}", org.described()),
        ))
    }
}

/// An invitation with its organization's display name, for the invitee.
#[derive(Debug, Clone)]
pub struct InvitationView {
    pub row: InvitationRow,
    pub org_display_name: String,
}

/// What a new invitation grants and to whom.
pub struct NewInvitation {
    pub email: Email,
    pub grant: Grant,
}

/// The message carrying an invitation link.
async fn send_invitation(
    conn: &mut Conn,
    org: &OrgRow,
    inviter: &str,
    invitation: &InvitationRow,
    token: &str,
    settings: &InvitationSettings,
) -> Result<()> {
    let mut grants = invitation.roles.clone();
    grants.extend(invitation.extra_permissions.iter().cloned());
    let body = format!(
        "{inviter} invited you to join the organization \"{}\" ({}).\n\
         To accept, sign in with {} and open {}{token}\n\
         The link expires at {}. If you do not want to join, decline from the same link or ignore this message.",
        org.display_name,
        grants.join(", "),
        invitation.email,
        settings.link_prefix,
        invitation.expires_at,
    );
    outbox::enqueue(
        conn,
        &invitation.email,
        &format!("You are invited to join {}", org.display_name),
        &body,
    )
    .await
}

/// The invitation of `org_id` with `id`, locked.
pub(super) async fn lock_invitation(
    conn: &mut Conn,
    org_id: Uuid,
    id: Uuid,
) -> Result<InvitationRow> {
    invitations::table
        .filter(invitations::id.eq(id))
        .filter(invitations::org_id.eq(org_id))
        .select(InvitationRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "invitation {} not found",
                ChildName::name_of(org_id, ChildName::INVITATIONS, id)
            ))
        })
}

/// How a user's display name and email appear in messages to others.
pub(super) fn person(user: &User) -> String {
    format!("{} <{}>", user.row.display_name, user.row.email)
}

/// Closes an open invitation in `state`.
pub(super) async fn close(
    conn: &mut Conn,
    id: Uuid,
    state: InvitationState,
    accepted_by: Option<Uuid>,
) -> Result<InvitationRow> {
    Ok(diesel::update(invitations::table.find(id))
        .set((
            invitations::state.eq(state.stored()),
            invitations::closed_at.eq(diesel::dsl::now),
            invitations::accepted_by.eq(accepted_by),
        ))
        .returning(InvitationRow::as_returning())
        .prepared()
        .get_result(conn)
        .await?)
}

impl Store {
    pub async fn create_invitation(
        &self,
        actor: &Actor,
        inviter: &User,
        access: &OrgAccess,
        new: NewInvitation,
        settings: &InvitationSettings,
    ) -> Result<InvitationView> {
        let new = &new;
        let org_id = access.org().id;
        self.change_reading(
            access,
            actor,
            |conn| Catalog::load(conn).scope_boxed(),
            |conn, (change, catalog)| {
                async move {
                    let org = &change.org;
                    if org.personal_owner_id.is_some() {
                        return Err(Error::precondition(
                            "PERSONAL_ORGANIZATION",
                            org.name(),
                            "a personal organization has only its owner; create a team organization and invite people there",
                        ));
                    }
                    let Grant { roles, permissions } = &new.grant;
                    catalog.ensure_known("invitation", Some(roles), Some(permissions))?;
                    let granted = catalog.effective(roles, permissions);
                    change.ensure_can_grant_roles(roles)?;
                    change.ensure_can_grant(&granted, "this invitation")?;
                    let email = new.email.as_str();
                    if is_member_by_email(conn, org_id, email).await? {
                        return Err(Error::AlreadyExists(format!(
                            "{email} is already a member of {}",
                            org.described()
                        )));
                    }
                    // Refused now rather than when accepted; checked again then, as
                    // other invitations may have filled the organization meanwhile.
                    ensure_member_room(conn, org, Joining::Inviting).await?;
                    // A lapsed invitation gives way to the new one.
                    diesel::update(
                        invitations::table
                            .filter(invitations::org_id.eq(org_id))
                            .filter(invitations::email.eq(email))
                            .filter(invitations::state.eq(InvitationState::Pending.stored()))
                            .filter(invitations::expires_at.le(diesel::dsl::now)),
                    )
                    .set((
                        invitations::state.eq(InvitationState::Expired.stored()),
                        invitations::closed_at.eq(diesel::dsl::now),
                    ))
                    .prepared()
                    .execute(conn)
                    .await?;
                    let secret = Secret::generate();
                    let invitation: InvitationRow = diesel::insert_into(invitations::table)
                        .values((
                            invitations::id.eq(Uuid::now_v7()),
                            invitations::org_id.eq(org_id),
                            invitations::email.eq(email),
                            invitations::roles.eq(roles.to_vec()),
                            invitations::extra_permissions.eq(permissions.to_vec()),
                            invitations::token_hash.eq(&secret.hash),
                            invitations::inviter_id.eq(change.actor_id),
                            invitations::expires_at.eq(Utc::now() + settings.ttl),
                        ))
                        .on_conflict_do_nothing()
                        .returning(InvitationRow::as_returning())
                        .get_result(conn)
                        .await
                        .optional()?
                        .ok_or_else(|| {
                            Error::AlreadyExists(format!(
                                "{email} already has a pending invitation to {}; resend or revoke it instead",
                                org.described()
                            ))
                        })?;
                    send_invitation(
                        conn,
                        org,
                        &person(inviter),
                        &invitation,
                        &secret.token,
                        settings,
                    )
                    .await?;
                    audit::record(
                        conn,
                        actor,
                        Some(org_id),
                        Action::InvitationCreate,
                        &invitation.name(),
                        serde_json::json!({
                            "email": email,
                            "roles": invitation.roles,
                            "extra_permissions": invitation.extra_permissions,
                        }),
                    )
                    .await?;
                    Ok(InvitationView {
                        row: invitation,
                        org_display_name: org.display_name.clone(),
                    })
                }
                .scope_boxed()
            },
        )
        .await
    }

    /// Sends an invitation again with a new token and expiry; the old link dies.
    /// At most once a `RESEND_INTERVAL`, so that nobody's inbox can be flooded
    /// through orgd.
    pub async fn resend_invitation(
        &self,
        actor: &Actor,
        inviter: &User,
        access: &OrgAccess,
        id: Uuid,
        settings: &InvitationSettings,
    ) -> Result<InvitationView> {
        let org_id = access.org().id;
        self.change_reading(
            access,
            actor,
            |conn| Catalog::load(conn).scope_boxed(),
            |conn, (change, catalog)| {
                async move {
                    let invitation = lock_invitation(conn, org_id, id).await?;
                    // A lapsed invitation can be resent; a closed one cannot.
                    if invitation.closed_at.is_some() {
                        invitation.ensure_open(&change.org)?;
                    }
                    // Under the invitation's row lock: concurrent resends wait, then
                    // see the first one's `sent_at`.
                    invitation.ensure_resendable(Utc::now())?;
                    let (roles, permissions) = invitation.grant();
                    let granted = catalog.effective(&roles, &permissions);
                    change.ensure_can_grant_roles(&roles)?;
                    change.ensure_can_grant(&granted, "resending this invitation")?;
                    let secret = Secret::generate();
                    let resent: InvitationRow = diesel::update(invitations::table.find(id))
                        .set((
                            invitations::token_hash.eq(&secret.hash),
                            invitations::sent_at.eq(diesel::dsl::now),
                            invitations::expires_at.eq(Utc::now() + settings.ttl),
                            // A new validity, whose end the feed announces again.
                            invitations::expiry_recorded_at.eq(None::<chrono::DateTime<Utc>>),
                            invitations::send_count.eq(invitations::send_count + 1),
                            // Whoever resends it now vouches for it (checked above):
                            // acceptance checks them, not an inviter who may have left.
                            invitations::inviter_id.eq(inviter.row.id),
                        ))
                        .returning(InvitationRow::as_returning())
                        .prepared()
                        .get_result(conn)
                        .await?;
                    send_invitation(
                        conn,
                        &change.org,
                        &person(inviter),
                        &resent,
                        &secret.token,
                        settings,
                    )
                    .await?;
                    audit::record(
                        conn,
                        actor,
                        Some(org_id),
                        Action::InvitationResend,
                        &resent.name(),
                        serde_json::json!({ "email": resent.email }),
                    )
                    .await?;
                    Ok(InvitationView {
                        row: resent,
                        org_display_name: change.org.display_name.clone(),
                    })
                }
                .scope_boxed()
            },
        )
        .await
    }

    /// Revokes a pending (or lapsed) invitation.
    pub async fn revoke_invitation(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: Uuid,
    ) -> Result<InvitationView> {
        let org_id = access.org().id;
        self.change(access, actor, |conn, change| {
            async move {
                let invitation = lock_invitation(conn, org_id, id).await?;
                if invitation.closed_at.is_some() {
                    invitation.ensure_open(&change.org)?;
                }
                let revoked = close(conn, id, InvitationState::Revoked, None).await?;
                audit::record(
                    conn,
                    actor,
                    Some(org_id),
                    Action::InvitationRevoke,
                    &revoked.name(),
                    serde_json::json!({ "email": revoked.email }),
                )
                .await?;
                Ok(InvitationView {
                    row: revoked,
                    org_display_name: change.org.display_name.clone(),
                })
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn get_invitation(&self, org_id: Uuid, id: Uuid) -> Result<InvitationView> {
        let (mut found, _) = self
            .list_invitations(InvitationFilter::One { org_id, id }, PageRequest::first(1))
            .await?;
        found.pop().ok_or_else(|| {
            Error::NotFound(format!(
                "invitation {} not found",
                ChildName::name_of(org_id, ChildName::INVITATIONS, id)
            ))
        })
    }

    /// A page of invitations, newest first.
    pub async fn list_invitations(
        &self,
        filter: InvitationFilter,
        page: PageRequest,
    ) -> Result<(Vec<InvitationView>, String)> {
        let filter = &filter;
        let rows: Vec<(InvitationRow, String)> = self
            .read(|conn| {
                async move {
                    let mut query = invitations::table
                        .inner_join(organizations::table)
                        .select((InvitationRow::as_select(), organizations::display_name))
                        .order((invitations::created_at.desc(), invitations::id.desc()))
                        .limit(page.limit + 1)
                        .into_boxed();
                    let pending = invitations::state
                        .eq(InvitationState::Pending.stored())
                        .and(invitations::expires_at.gt(diesel::dsl::now));
                    match filter {
                        InvitationFilter::One { org_id, id } => {
                            query = query
                                .filter(invitations::org_id.eq(*org_id))
                                .filter(invitations::id.eq(*id));
                        }
                        InvitationFilter::Org { org_id, state } => {
                            query = query.filter(invitations::org_id.eq(*org_id));
                            query = match state {
                                None => query,
                                Some(InvitationState::Pending) => query.filter(pending),
                                Some(InvitationState::Expired) => query.filter(
                                    invitations::state.eq(InvitationState::Expired.stored()).or(
                                        invitations::state
                                            .eq(InvitationState::Pending.stored())
                                            .and(invitations::expires_at.le(diesel::dsl::now)),
                                    ),
                                ),
                                Some(closed) => {
                                    query.filter(invitations::state.eq(closed.stored()))
                                }
                            };
                        }
                        InvitationFilter::Invitee { email } => {
                            query = query
                                .filter(invitations::email.eq(email.as_str()))
                                .filter(pending)
                                .filter(organizations::deleted_at.is_null());
                        }
                    }
                    if let Some(after) = page.after {
                        query = query.filter(newest_first_after!(
                            invitations::created_at,
                            invitations::id,
                            after
                        ));
                    }
                    Ok(query.load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        let views = rows
            .into_iter()
            .map(|(row, org_display_name)| InvitationView {
                row,
                org_display_name,
            })
            .collect();
        Ok(page.finish(views, |v: &InvitationView| PageToken {
            time: v.row.created_at,
            id: v.row.id,
        }))
    }
}

/// Which invitations to list.
pub enum InvitationFilter {
    One {
        org_id: Uuid,
        id: Uuid,
    },
    /// An organization's, optionally only those in `state`.
    Org {
        org_id: Uuid,
        state: Option<InvitationState>,
    },
    /// The pending invitations addressed to `email`, across organizations.
    Invitee {
        email: Email,
    },
}
