//! OrgService: organizations, plus who-am-i, permission checks, and users'
//! accounts (reading, support's organization limit, deletion).

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{
    account_access, call_context, declared_permission, emailed_token, mask_paths, named_user,
    not_updatable, optional, org_access, permission, request_id, timestamp,
};
use crate::auth::{Checkable, Principal, ServiceCaller};
use crate::domain::{
    Description, DisplayName, Email, Etag, OrgRef, PageRequest, Permission, Slug, UserRef, quoted,
};
use crate::error::{Error, Result};
use crate::pb::{self, org_service_server::OrgService};
use crate::store::Store;
use crate::store::access::MembershipView;
use crate::store::org_row::OrgRow;
use crate::store::orgs::{ContactVerification, CreateOrg, OrgChanges, OrgLimits};
use crate::store::users::User;

/// Fields UpdateOrganization can change.
const UPDATABLE_FIELDS: &str = "display_name, description, slug, contact_email";

/// Fields UpdateUser can change.
const UPDATABLE_USER_FIELDS: &str = "organization_limit";

/// The most organizations support may let one user belong to (the column's
/// check says the same).
const MAX_ORGANIZATION_LIMIT: i32 = 1000;

/// The organization limit an UpdateUser request asks for: `None` to return to
/// the service's.
fn organization_limit(
    user: &pb::User,
    mask: Option<&prost_types::FieldMask>,
    service_limit: i64,
) -> Result<Option<i32>> {
    for path in mask_paths("update_mask", mask, UPDATABLE_USER_FIELDS)? {
        if path != "organization_limit" {
            return Err(not_updatable("update_mask", path, UPDATABLE_USER_FIELDS));
        }
    }
    match user.organization_limit {
        0 => Ok(None),
        n @ 1..=MAX_ORGANIZATION_LIMIT => Ok(Some(n)),
        n => Err(Error::invalid(
            "user.organization_limit",
            format!(
                "{n} is not a limit: use 1 to {MAX_ORGANIZATION_LIMIT}, \
                 or 0 for the service's limit of {service_limit}"
            ),
        )),
    }
}

#[derive(Debug, Clone)]
pub struct OrgSettings {
    pub limits: OrgLimits,
    /// The plan new team organizations subscribe to (None: the free plan).
    pub default_plan: Option<String>,
    pub deleted_retention: Duration,
    pub verification: ContactVerification,
}

pub struct OrgApi {
    store: Store,
    settings: OrgSettings,
    /// What UpdateOrganization's policy demands, which a pending contact email
    /// asked for at creation needs too.
    updating: Permission,
}

impl OrgApi {
    pub fn new(store: Store, settings: OrgSettings) -> Self {
        OrgApi {
            store,
            settings,
            updating: declared_permission(
                pb::org_service_server::SERVICE_NAME,
                "UpdateOrganization",
            ),
        }
    }
}

pub(super) fn organization(row: &OrgRow) -> pb::Organization {
    let state = if row.deleted_at.is_some() {
        pb::organization::State::Deleted
    } else {
        pb::organization::State::Active
    };
    pb::Organization {
        name: row.name(),
        uid: row.id.to_string(),
        slug: row.slug.clone(),
        display_name: row.display_name.clone(),
        description: row.description.clone(),
        contact_email: row.contact_email.clone(),
        pending_contact_email: row.pending_contact_email.clone().unwrap_or_default(),
        personal: row.personal_owner_id.is_some(),
        state: state.into(),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        delete_time: row.deleted_at.map(timestamp),
        purge_time: row.purge_at.map(timestamp),
        etag: row.etag().to_string(),
    }
}

fn membership(view: MembershipView) -> pb::Membership {
    pb::Membership {
        organization: view.org.name(),
        slug: view.org.slug,
        display_name: view.org.display_name,
        personal: view.org.personal_owner_id.is_some(),
        roles: view.access.roles,
        extra_permissions: view.access.extra_permissions,
        effective_permissions: view.access.effective.into_iter().collect(),
        join_time: Some(timestamp(view.access.joined_at)),
    }
}

/// `user` as the API shows it; `service_limit` is `--max-orgs-per-user`.
fn user(user: &User, service_limit: i64) -> pb::User {
    pb::User {
        name: UserRef::name_of(user.row.id),
        uid: user.row.id.to_string(),
        subject: user.row.subject.clone().unwrap_or_default(),
        email: user.row.email.clone(),
        email_verified: user.row.email_verified,
        display_name: user.row.display_name.clone(),
        personal_organization: OrgRef::name_of(user.personal_org_id),
        create_time: Some(timestamp(user.row.created_at)),
        organization_limit: user
            .row
            .organization_limit
            .unwrap_or(i32::try_from(service_limit).unwrap_or(i32::MAX)),
    }
}

fn backend_service(service: &ServiceCaller) -> pb::BackendService {
    let (checks_every_permission, checkable_permissions) = match &*service.checkable {
        Checkable::Every => (true, Vec::new()),
        Checkable::Only(permissions) => (false, permissions.iter().cloned().collect()),
    };
    pb::BackendService {
        name: service.name(),
        subject: service.subject.clone(),
        checks_every_permission,
        checkable_permissions,
    }
}

/// Reads the fields named in an update mask out of `org`.
fn changes_from_mask(
    org: &pb::Organization,
    mask: Option<&prost_types::FieldMask>,
) -> Result<OrgChanges> {
    let paths = mask_paths("update_mask", mask, UPDATABLE_FIELDS)?;
    let mut changes = OrgChanges::default();
    for path in paths {
        let field = format!("organization.{path}");
        match path.as_str() {
            "display_name" => {
                changes.display_name = Some(DisplayName::parse(&field, &org.display_name)?)
            }
            "description" => {
                changes.description = Some(Description::parse(&field, &org.description)?)
            }
            "slug" => changes.slug = Some(Slug::parse(&field, &org.slug)?),
            "contact_email" => {
                changes.contact_email = Some(Email::parse(&field, &org.contact_email)?)
            }
            other => return Err(not_updatable("update_mask", other, UPDATABLE_FIELDS)),
        }
    }
    Ok(changes)
}

/// `user`'s email address when it is valid but not verified.
fn unverified_email(user: &User) -> Option<Email> {
    if user.row.email_verified {
        return None;
    }
    Email::parse("email", &user.row.email).ok()
}

#[tonic::async_trait]
impl OrgService for OrgApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let ctx = call_context(&request)?;
        let creator = ctx.user()?;
        let org = request.get_ref().organization.as_ref().ok_or_else(|| {
            Error::invalid("organization", "the organization to create is required")
        })?;
        let request_id = request_id(&request.get_ref().request_id)?;
        let input = CreateOrg {
            request_id,
            plan: self.settings.default_plan.clone(),
            display_name: DisplayName::parse("organization.display_name", &org.display_name)?,
            slug: optional(&org.slug)
                .map(|s| Slug::parse("organization.slug", s))
                .transpose()?,
            description: Some(Description::parse(
                "organization.description",
                &org.description,
            )?),
            contact_email: optional(&org.contact_email)
                .map(|e| Email::parse("organization.contact_email", e))
                .transpose()?
                // An address the identity provider did not verify is only
                // pending: its mailbox confirms it.
                .or_else(|| unverified_email(creator)),
            contact_permission: self.updating.clone(),
        };
        let created = self
            .store
            .create_org(
                &ctx.actor(),
                creator.verified_email().as_ref(),
                input,
                self.settings.limits,
                &self.settings.verification,
            )
            .await?;
        Ok(Response::new(organization(&created)))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(organization(org_access(&request)?.org())))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let (orgs, next_page_token) = self
            .store
            .list_orgs_of_user(ctx.user()?.row.id, page, body.show_deleted)
            .await?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: orgs
                .iter()
                .map(|listed| organization(&listed.org))
                .collect(),
            next_page_token,
        }))
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let body = request.get_ref();
        let org = body
            .organization
            .as_ref()
            .ok_or_else(|| Error::invalid("organization", "the organization is required"))?;
        let changes = changes_from_mask(org, body.update_mask.as_ref())?;
        let etag = Etag::parse_optional("organization.etag", &org.etag)?;
        let updated = self
            .store
            .update_org(
                &ctx.actor(),
                &access,
                changes,
                etag,
                &self.settings.verification,
            )
            .await?;
        Ok(Response::new(organization(&updated)))
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let body = request.get_ref();
        let etag = Etag::parse_optional("etag", &body.etag)?;
        let deleted = self
            .store
            .delete_org(
                &ctx.actor(),
                &access,
                &body.confirmation,
                etag,
                self.settings.deleted_retention,
            )
            .await?;
        Ok(Response::new(organization(&deleted)))
    }

    async fn undelete_organization(
        &self,
        request: Request<pb::UndeleteOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let restored = self
            .store
            .undelete_org(&ctx.actor(), &access, self.settings.limits)
            .await?;
        Ok(Response::new(organization(&restored)))
    }

    async fn verify_contact_email(
        &self,
        request: Request<pb::VerifyContactEmailRequest>,
    ) -> Result<Response<pb::VerifyContactEmailResponse>, Status> {
        let ctx = call_context(&request)?;
        let token = emailed_token(&request.get_ref().token, "the verification message")?;
        let org = self.store.verify_contact_email(&ctx.actor(), token).await?;
        Ok(Response::new(pb::VerifyContactEmailResponse {
            organization: org.name(),
            contact_email: org.contact_email,
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let ctx = call_context(&request)?;
        if let Principal::Service(service) = &ctx.principal {
            return Ok(Response::new(pb::WhoAmIResponse {
                service: Some(backend_service(service)),
                ..Default::default()
            }));
        }
        let caller = ctx.user()?;
        // Through an API token: its organization only, within its limit.
        let token = match &ctx.principal {
            Principal::ApiToken(token) => Some(token),
            _ => None,
        };
        let mut memberships = Vec::new();
        let mut page = PageRequest::parse(0, "")?;
        loop {
            let (views, next) = self.store.memberships_of_user(caller.row.id, page).await?;
            for mut view in views {
                match token {
                    Some(token) if view.org.id != token.org_id => continue,
                    Some(token) => view.access.limit_to(&token.limit),
                    None => {}
                }
                memberships.push(membership(view));
            }
            if next.is_empty() {
                break;
            }
            page = PageRequest::parse(0, &next)?;
        }
        Ok(Response::new(pb::WhoAmIResponse {
            user: Some(user(caller, self.settings.limits.max_orgs_per_user)),
            token_organization: token
                .map(|token| OrgRef::name_of(token.org_id))
                .unwrap_or_default(),
            memberships,
            service: None,
        }))
    }

    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let access = org_access(&request)?;
        let body = request.get_ref();
        // The organization the policy layer resolved: the token's own. An
        // unknown user is simply not a member, so the answer tells nobody
        // which user ids exist.
        let org = OrgRef::Id(access.org().id);
        let question = permission::question("", org, &body.user, &body.permission)?;
        Ok(Response::new(
            permission::check_one(&self.store, &question).await?,
        ))
    }

    async fn list_user_organizations(
        &self,
        request: Request<pb::ListUserOrganizationsRequest>,
    ) -> Result<Response<pb::ListUserOrganizationsResponse>, Status> {
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let Some(user) = named_user(&self.store, "user", &body.user).await? else {
            // A subject orgd has never seen belongs to no organization.
            return Ok(Response::new(Default::default()));
        };
        let (views, next_page_token) = self.store.memberships_of_user(user.row.id, page).await?;
        Ok(Response::new(pb::ListUserOrganizationsResponse {
            memberships: views.into_iter().map(membership).collect(),
            next_page_token,
        }))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = call_context(&request)?;
        let access = account_access(&request)?;
        self.store
            .delete_user(&ctx.actor(), &access, self.settings.deleted_retention)
            .await?;
        Ok(Response::new(()))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let id = account_access(&request)?.user_id();
        let found =
            self.store.user_by_id(id).await?.ok_or_else(|| {
                Error::NotFound(format!("user {} not found", UserRef::name_of(id)))
            })?;
        Ok(Response::new(user(
            &found,
            self.settings.limits.max_orgs_per_user,
        )))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let service_limit = self.settings.limits.max_orgs_per_user;
        let wanted = body
            .user
            .as_ref()
            .ok_or_else(|| Error::invalid("user", "the user to update is required"))?;
        let limit = organization_limit(wanted, body.update_mask.as_ref(), service_limit)?;
        let target = named_user(&self.store, "user.name", &wanted.name)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "orgd has not seen {} yet: set their limit once they have signed in",
                    quoted(&wanted.name)
                ))
            })?;
        let updated = self
            .store
            .set_organization_limit(&ctx.actor(), target.row.id, limit)
            .await?;
        Ok(Response::new(user(&updated, service_limit)))
    }
}
