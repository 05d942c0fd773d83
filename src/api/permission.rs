//! PermissionService: backend services' questions about any organization. The
//! auth layer admitted a service; what each question may ask about
//! (`--service-permissions`) is checked here, question by question.

use tonic::{Request, Response, Status};

use super::call_context;
use super::member::member;
use super::org::organization;
use crate::domain::{OrgRef, PageRequest, Permission, UserName};
use crate::error::{Error, Result};
use crate::pb::{self, permission_service_server::PermissionService};
use crate::store::Store;
use crate::store::checks::{Question, Verdict, unknown_permission};

/// The most checks one CheckPermissions call takes.
const MAX_CHECKS: usize = 100;

pub struct PermissionApi {
    store: Store,
}

impl PermissionApi {
    pub fn new(store: Store) -> Self {
        PermissionApi { store }
    }
}

/// The question of a request's `user` and `permission` fields (under
/// `prefix`, e.g. `checks[3].`) about `org`.
pub(super) fn question(
    prefix: &str,
    org: OrgRef,
    user: &str,
    permission: &str,
) -> Result<Question> {
    Ok(Question {
        org,
        user: UserName::parse(&format!("{prefix}user"), user)?,
        permission: Permission::parse(&format!("{prefix}permission"), permission)?,
    })
}

/// The wire form of a verdict.
fn answer(verdict: Verdict) -> pb::CheckPermissionResponse {
    use pb::check_permission_response::Reason;
    let reason = match verdict {
        Verdict::Allowed => Reason::Allowed,
        Verdict::LacksPermission => Reason::LacksPermission,
        Verdict::NotMember => Reason::NotMember,
        Verdict::OrganizationDeleted => Reason::OrganizationDeleted,
        Verdict::OrganizationNotFound => Reason::OrganizationNotFound,
    };
    pb::CheckPermissionResponse {
        allowed: verdict == Verdict::Allowed,
        reason: reason.into(),
    }
}

/// The answer to one question; an unknown permission is INVALID_ARGUMENT.
pub(super) async fn check_one(
    store: &Store,
    question: &Question,
) -> Result<pb::CheckPermissionResponse> {
    match store.check_permissions(&[question]).await?.as_slice() {
        [Some(verdict)] => Ok(answer(*verdict)),
        _ => {
            let defined = store.permission_names().await?;
            Err(unknown_permission(
                "permission",
                &question.permission,
                &defined,
            ))
        }
    }
}

#[tonic::async_trait]
impl PermissionService for PermissionApi {
    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let org = OrgRef::parse("organization", &body.organization)?;
        let question = question("", org, &body.user, &body.permission)?;
        ctx.service()?
            .ensure_may_check("permission", &question.permission)?;
        Ok(Response::new(check_one(&self.store, &question).await?))
    }

    async fn check_permissions(
        &self,
        request: Request<pb::CheckPermissionsRequest>,
    ) -> Result<Response<pb::CheckPermissionsResponse>, Status> {
        let ctx = call_context(&request)?;
        let service = ctx.service()?;
        let checks = &request.get_ref().checks;
        if checks.is_empty() || checks.len() > MAX_CHECKS {
            return Err(Error::invalid(
                "checks",
                format!(
                    "give 1 to {MAX_CHECKS} checks; this request has {}: split larger batches over several calls",
                    checks.len()
                ),
            )
            .into());
        }
        // Each check is read on its own: a malformed one is its own error only.
        let questions: Vec<Result<Question>> = checks
            .iter()
            .enumerate()
            .map(|(i, check)| {
                let prefix = format!("checks[{i}].");
                let org = OrgRef::parse(&format!("{prefix}organization"), &check.organization)?;
                let question = question(&prefix, org, &check.user, &check.permission)?;
                service.ensure_may_check(&format!("{prefix}permission"), &question.permission)?;
                Ok(question)
            })
            .collect();
        let asked: Vec<&Question> = questions.iter().flatten().collect();
        let mut verdicts = match asked.as_slice() {
            [] => Vec::new(),
            asked => self.store.check_permissions(asked).await?,
        }
        .into_iter();
        // The names orgd defines, read only when a check asked about another.
        let defined = if verdicts.as_slice().contains(&None) {
            self.store.permission_names().await?
        } else {
            Vec::new()
        };
        let results = checks
            .iter()
            .zip(questions)
            .enumerate()
            .map(|(i, (check, question))| {
                use pb::permission_check_result::Outcome;
                let outcome = question.and_then(|question| match verdicts.next().flatten() {
                    Some(verdict) => Ok(answer(verdict)),
                    None => Err(unknown_permission(
                        &format!("checks[{i}].permission"),
                        &question.permission,
                        &defined,
                    )),
                });
                pb::PermissionCheckResult {
                    correlation_id: check.correlation_id.clone(),
                    outcome: Some(match outcome {
                        Ok(result) => Outcome::Result(result),
                        Err(err) => Outcome::Error(err.into()),
                    }),
                }
            })
            .collect();
        Ok(Response::new(pb::CheckPermissionsResponse { results }))
    }

    async fn lookup_organizations(
        &self,
        request: Request<pb::LookupOrganizationsRequest>,
    ) -> Result<Response<pb::LookupOrganizationsResponse>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let user = UserName::parse("user", &body.user)?;
        let permission = Permission::parse("permission", &body.permission)?;
        ctx.service()?.ensure_may_check("permission", &permission)?;
        let page = PageRequest::parse_scoped(
            body.page_size,
            &body.page_token,
            &["LookupOrganizations", &body.user, &body.permission],
        )?;
        let (orgs, next_page_token) = self.store.lookup_orgs(&user, &permission, page).await?;
        Ok(Response::new(pb::LookupOrganizationsResponse {
            organizations: orgs.iter().map(organization).collect(),
            next_page_token,
        }))
    }

    async fn lookup_members(
        &self,
        request: Request<pb::LookupMembersRequest>,
    ) -> Result<Response<pb::LookupMembersResponse>, Status> {
        let ctx = call_context(&request)?;
        let body = request.get_ref();
        let org = OrgRef::parse("organization", &body.organization)?;
        let permission = Permission::parse("permission", &body.permission)?;
        ctx.service()?.ensure_may_check("permission", &permission)?;
        let page = PageRequest::parse_scoped(
            body.page_size,
            &body.page_token,
            &["LookupMembers", &body.organization, &body.permission],
        )?;
        let (members, next_page_token) = self.store.lookup_members(&org, &permission, page).await?;
        Ok(Response::new(pb::LookupMembersResponse {
            members: members.into_iter().map(member).collect(),
            next_page_token,
        }))
    }
}
