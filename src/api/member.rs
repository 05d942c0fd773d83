//! MemberService: invitations, members, ownership.

use tonic::{Request, Response, Status};

use super::{
    call_context, child_id, declared_permission, emailed_token, mask_paths, named_user,
    not_updatable, org_access, timestamp,
};
use crate::auth::OrgAccess;
use crate::domain::{
    Action, ChildName, DEFAULT_ROLE, Email, Etag, Grant, Names, PageRequest, Permission, UserRef,
    quoted,
};
use crate::error::{Error, Result};
use crate::pb::{self, member_service_server::MemberService};
use crate::store::Store;
use crate::store::invitations::{
    InvitationFilter, InvitationSettings, InvitationState, InvitationView, NewInvitation,
};
use crate::store::member_changes::MemberUpdate;
use crate::store::members::MemberView;
use crate::store::orgs::OrgLimits;

/// Fields UpdateMember can replace.
const UPDATABLE_FIELDS: &str = "roles, extra_permissions";
/// Most members one batch call may change.
const MAX_BATCH: usize = 100;

#[derive(Debug, Clone)]
pub struct MemberSettings {
    pub invitations: InvitationSettings,
    pub limits: OrgLimits,
}

pub struct MemberApi {
    store: Store,
    settings: MemberSettings,
    /// What CreateInvitation's policy demands; an invitation's inviter must
    /// still hold it when the invitation is accepted.
    inviting: Permission,
}

impl MemberApi {
    pub fn new(store: Store, settings: MemberSettings) -> Self {
        MemberApi {
            store,
            settings,
            inviting: declared_permission(
                pb::member_service_server::SERVICE_NAME,
                "CreateInvitation",
            ),
        }
    }
}

/// The wire form of a member; by value, so that lists move their strings
/// instead of copying them.
pub(super) fn member(view: MemberView) -> pb::Member {
    pb::Member {
        name: view.name(),
        user: UserRef::name_of(view.user_id),
        join_time: Some(timestamp(view.access.joined_at)),
        inviter: view.invited_by.map(UserRef::name_of).unwrap_or_default(),
        update_time: Some(timestamp(view.updated_at)),
        etag: view.etag().to_string(),
        email: view.email,
        display_name: view.display_name,
        roles: view.access.roles,
        extra_permissions: view.access.extra_permissions,
        effective_permissions: view.access.effective.into_iter().collect(),
    }
}

fn invitation(view: &InvitationView) -> pb::Invitation {
    use pb::invitation::State;
    let row = &view.row;
    let state = match row.state() {
        InvitationState::Pending => State::Pending,
        InvitationState::Accepted => State::Accepted,
        InvitationState::Declined => State::Declined,
        InvitationState::Revoked => State::Revoked,
        InvitationState::Expired => State::Expired,
    };
    pb::Invitation {
        name: row.name(),
        email: row.email.clone(),
        roles: row.roles.clone(),
        extra_permissions: row.extra_permissions.clone(),
        state: state.into(),
        organization: crate::domain::OrgRef::name_of(row.org_id),
        organization_display_name: view.org_display_name.clone(),
        inviter: row.inviter_id.map(UserRef::name_of).unwrap_or_default(),
        create_time: Some(timestamp(row.created_at)),
        send_time: Some(timestamp(row.sent_at)),
        expire_time: Some(timestamp(row.expires_at)),
        close_time: row.closed_at.map(timestamp),
        member: row
            .accepted_by
            .map(|user| ChildName::name_of(row.org_id, ChildName::MEMBERS, user))
            .unwrap_or_default(),
        send_count: row.send_count,
    }
}

/// A member update from its request, found at `field` (e.g. `requests[2]`).
fn member_update(
    field: &str,
    request: &pb::UpdateMemberRequest,
    access: &OrgAccess,
) -> Result<MemberUpdate> {
    let prefix = |name: &str| {
        if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        }
    };
    let given = request
        .member
        .as_ref()
        .ok_or_else(|| Error::invalid(prefix("member"), "the member to update is required"))?;
    let member_field = prefix("member");
    let paths = mask_paths(
        &prefix("update_mask"),
        request.update_mask.as_ref(),
        UPDATABLE_FIELDS,
    )?;
    let mut update = MemberUpdate {
        user_id: child_id(
            &format!("{member_field}.name"),
            &given.name,
            ChildName::MEMBERS,
            access,
        )?,
        roles: None,
        permissions: None,
        etag: Etag::parse_optional(&format!("{member_field}.etag"), &given.etag)?,
        field: member_field.clone(),
    };
    for path in paths {
        match path.as_str() {
            "roles" => {
                update.roles = Some(Names::roles(
                    &format!("{member_field}.roles"),
                    &given.roles,
                )?)
            }
            "extra_permissions" => {
                update.permissions = Some(Names::permissions(
                    &format!("{member_field}.extra_permissions"),
                    &given.extra_permissions,
                )?)
            }
            other => {
                return Err(not_updatable(
                    &prefix("update_mask"),
                    other,
                    UPDATABLE_FIELDS,
                ));
            }
        }
    }
    Ok(update)
}

fn state_filter(raw: i32) -> Result<Option<InvitationState>> {
    use pb::invitation::State;
    Ok(
        match State::try_from(raw)
            .map_err(|_| Error::invalid("state", format!("{raw} is not an invitation state")))?
        {
            State::Unspecified => None,
            State::Pending => Some(InvitationState::Pending),
            State::Accepted => Some(InvitationState::Accepted),
            State::Declined => Some(InvitationState::Declined),
            State::Revoked => Some(InvitationState::Revoked),
            State::Expired => Some(InvitationState::Expired),
        },
    )
}

/// Refuses an empty or oversized batch and repeated members.
fn ensure_batch(field: &str, ids: &[uuid::Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::invalid(field, "name at least one member"));
    }
    if ids.len() > MAX_BATCH {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_BATCH} members per call"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(repeated) = ids.iter().find(|id| !seen.insert(**id)) {
        return Err(Error::invalid(
            field,
            format!("users/{repeated} appears more than once"),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl MemberService for MemberApi {
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let given = request
            .get_ref()
            .invitation
            .as_ref()
            .ok_or_else(|| Error::invalid("invitation", "the invitation is required"))?;
        let email = Email::parse("invitation.email", &given.email)?;
        let mut grant = Grant {
            roles: Names::roles("invitation.roles", &given.roles)?,
            permissions: Names::permissions(
                "invitation.extra_permissions",
                &given.extra_permissions,
            )?,
        };
        // Named permissions alone are what the inviter meant (Platform.sh's
        // `--permission=billing`): the default role only fills an empty grant.
        if grant.roles.is_empty() && grant.permissions.is_empty() {
            grant.roles.0.insert(DEFAULT_ROLE.to_owned());
        }
        let created = self
            .store
            .create_invitation(
                &ctx.actor(),
                ctx.user()?,
                &access,
                NewInvitation { email, grant },
                &self.settings.invitations,
            )
            .await?;
        Ok(Response::new(invitation(&created)))
    }

    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        let access = org_access(&request)?;
        let id = child_id(
            "name",
            &request.get_ref().name,
            ChildName::INVITATIONS,
            &access,
        )?;
        let found = self.store.get_invitation(access.org().id, id).await?;
        Ok(Response::new(invitation(&found)))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let access = org_access(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let filter = InvitationFilter::Org {
            org_id: access.org().id,
            state: state_filter(body.state)?,
        };
        let (views, next_page_token) = self.store.list_invitations(filter, page).await?;
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: views.iter().map(invitation).collect(),
            next_page_token,
        }))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let id = child_id(
            "name",
            &request.get_ref().name,
            ChildName::INVITATIONS,
            &access,
        )?;
        let resent = self
            .store
            .resend_invitation(
                &ctx.actor(),
                ctx.user()?,
                &access,
                id,
                &self.settings.invitations,
            )
            .await?;
        Ok(Response::new(invitation(&resent)))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let id = child_id(
            "name",
            &request.get_ref().name,
            ChildName::INVITATIONS,
            &access,
        )?;
        let revoked = self
            .store
            .revoke_invitation(&ctx.actor(), &access, id)
            .await?;
        Ok(Response::new(invitation(&revoked)))
    }

    async fn list_my_invitations(
        &self,
        request: Request<pb::ListMyInvitationsRequest>,
    ) -> Result<Response<pb::ListMyInvitationsResponse>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let user = ctx.user()?;
        let email = user.verified_email().ok_or_else(|| {
            Error::precondition(
                "EMAIL_NOT_VERIFIED",
                UserRef::name_of(user.row.id),
                format!(
                    "invitations are matched by verified email, and {} is not verified; verify it with your identity provider",
                    user.row.email
                ),
            )
        })?;
        let (views, next_page_token) = self
            .store
            .list_invitations(InvitationFilter::Invitee { email }, page)
            .await?;
        Ok(Response::new(pb::ListMyInvitationsResponse {
            invitations: views.iter().map(invitation).collect(),
            next_page_token,
        }))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let ctx = call_context(&request)?;
        let token = emailed_token(&request.get_ref().token, "the invitation email")?;
        let joined = self
            .store
            .accept_invitation(
                &ctx.actor(),
                ctx.user()?,
                token,
                self.settings.limits,
                &self.inviting,
            )
            .await?;
        Ok(Response::new(member(joined)))
    }

    async fn decline_invitation(
        &self,
        request: Request<pb::DeclineInvitationRequest>,
    ) -> Result<Response<pb::Invitation>, Status> {
        let ctx = call_context(&request)?;
        let token = emailed_token(&request.get_ref().token, "the invitation email")?;
        let declined = self
            .store
            .decline_invitation(&ctx.actor(), ctx.user()?, token)
            .await?;
        Ok(Response::new(invitation(&declined)))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let access = org_access(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let (views, next_page_token) = self.store.list_members(access.org().id, page).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: views.into_iter().map(member).collect(),
            next_page_token,
        }))
    }

    async fn get_member(
        &self,
        request: Request<pb::GetMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let access = org_access(&request)?;
        let user_id = child_id("name", &request.get_ref().name, ChildName::MEMBERS, &access)?;
        let found = self.store.get_member(access.org().id, user_id).await?;
        Ok(Response::new(member(found)))
    }

    async fn update_member(
        &self,
        request: Request<pb::UpdateMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let update = member_update("", request.get_ref(), &access)?;
        let mut updated = self
            .store
            .update_members(&ctx.actor(), &access, vec![update], Action::MemberUpdate)
            .await?;
        Ok(Response::new(member(updated.remove(0))))
    }

    async fn batch_update_members(
        &self,
        request: Request<pb::BatchUpdateMembersRequest>,
    ) -> Result<Response<pb::BatchUpdateMembersResponse>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let updates = request
            .get_ref()
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| member_update(&format!("requests[{i}]"), r, &access))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<uuid::Uuid> = updates.iter().map(|u| u.user_id).collect();
        ensure_batch("requests", &ids)?;
        let updated = self
            .store
            .update_members(&ctx.actor(), &access, updates, Action::MemberBatchUpdate)
            .await?;
        Ok(Response::new(pb::BatchUpdateMembersResponse {
            members: updated.into_iter().map(member).collect(),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let user_id = child_id("name", &request.get_ref().name, ChildName::MEMBERS, &access)?;
        self.store
            .remove_members(&ctx.actor(), &access, &[user_id], Action::MemberRemove)
            .await?;
        Ok(Response::new(()))
    }

    async fn batch_remove_members(
        &self,
        request: Request<pb::BatchRemoveMembersRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let ids = request
            .get_ref()
            .names
            .iter()
            .enumerate()
            .map(|(i, raw)| child_id(&format!("names[{i}]"), raw, ChildName::MEMBERS, &access))
            .collect::<Result<Vec<_>>>()?;
        ensure_batch("names", &ids)?;
        self.store
            .remove_members(&ctx.actor(), &access, &ids, Action::MemberBatchRemove)
            .await?;
        Ok(Response::new(()))
    }

    async fn leave_organization(
        &self,
        request: Request<pb::LeaveOrganizationRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        self.store.leave_org(&ctx.actor(), &access).await?;
        Ok(Response::new(()))
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let raw = &request.get_ref().new_owner;
        let new_owner = if raw.starts_with("organizations/") {
            child_id("new_owner", raw, ChildName::MEMBERS, &access)?
        } else {
            // A user orgd has never seen is no member either.
            let user = named_user(&self.store, "new_owner", raw).await?;
            user.map(|user| user.row.id).ok_or_else(|| {
                Error::NotFound(format!(
                    "{} is not a member of {}",
                    quoted(raw),
                    access.org().name()
                ))
            })?
        };
        let (new_owner, previous_owner) = self
            .store
            .transfer_ownership(&ctx.actor(), &access, new_owner)
            .await?;
        Ok(Response::new(pb::TransferOwnershipResponse {
            new_owner: Some(member(new_owner)),
            previous_owner: Some(member(previous_owner)),
        }))
    }
}
