//! TokenService: organization-scoped API tokens.

use tonic::{Request, Response, Status};

use super::{call_context, child_id, datetime, org_access, timestamp};
use crate::domain::{DisplayName, Names, PageRequest, UserRef};
use crate::error::{Error, Result};
use crate::pb::{self, token_service_server::TokenService};
use crate::store::Store;
use crate::store::tokens::{API_TOKENS, ApiTokenRow, NewApiToken};

pub struct TokenApi {
    store: Store,
}

impl TokenApi {
    pub fn new(store: Store) -> Self {
        TokenApi { store }
    }
}

/// `row` on the wire; `creator_is_member` tells an active token from one its
/// creator's leaving deactivated.
fn api_token(row: &ApiTokenRow, creator_is_member: bool) -> pb::ApiToken {
    use pb::api_token::State;
    let state = if row.revoked_at.is_some() {
        State::Revoked
    } else if row.expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
        State::Expired
    } else if !creator_is_member {
        State::Deactivated
    } else {
        State::Active
    };
    pb::ApiToken {
        state: state.into(),
        name: row.name(),
        display_name: row.display_name.clone(),
        creator: UserRef::name_of(row.creator_id),
        roles: row.roles.clone(),
        extra_permissions: row.extra_permissions.clone(),
        prefix: row.prefix.clone(),
        expire_time: row.expires_at.map(timestamp),
        create_time: Some(timestamp(row.created_at)),
        last_use_time: row.last_used_at.map(timestamp),
        revoke_time: row.revoked_at.map(timestamp),
    }
}

fn new_api_token(given: &pb::ApiToken) -> Result<NewApiToken> {
    // The rules of every display name: one that shows blank, or not as
    // written, cannot tell tokens apart.
    let display_name = DisplayName::parse("api_token.display_name", &given.display_name)?;
    let roles = Names::roles("api_token.roles", &given.roles)?;
    let permissions = Names::permissions("api_token.extra_permissions", &given.extra_permissions)?;
    if roles.is_empty() && permissions.is_empty() {
        return Err(Error::invalid(
            "api_token.roles",
            "give the token at least one role or permission",
        ));
    }
    let expires_at = given
        .expire_time
        .as_ref()
        .map(|t| datetime("api_token.expire_time", t))
        .transpose()?;
    if expires_at.is_some_and(|at| at <= chrono::Utc::now()) {
        return Err(Error::invalid(
            "api_token.expire_time",
            "the expiry must be in the future",
        ));
    }
    Ok(NewApiToken {
        display_name: display_name.as_str().to_owned(),
        roles,
        permissions,
        expires_at,
    })
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_api_token(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreateApiTokenResponse>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let given = request
            .get_ref()
            .api_token
            .as_ref()
            .ok_or_else(|| Error::invalid("api_token", "the token to create is required"))?;
        let new = new_api_token(given)?;
        let (row, secret) = self
            .store
            .create_api_token(&ctx.actor(), &access, new)
            .await?;
        Ok(Response::new(pb::CreateApiTokenResponse {
            // Its creator is the caller, a member.
            api_token: Some(api_token(&row, true)),
            secret,
        }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let (rows, next_page_token) = self
            .store
            .list_api_tokens(&ctx.actor(), &access, page)
            .await?;
        Ok(Response::new(pb::ListApiTokensResponse {
            api_tokens: rows
                .iter()
                .map(|(row, creator_is_member)| api_token(row, *creator_is_member))
                .collect(),
            next_page_token,
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let ctx = call_context(&request)?;
        let access = org_access(&request)?;
        let id = child_id("name", &request.get_ref().name, API_TOKENS, &access)?;
        let row = self
            .store
            .revoke_api_token(&ctx.actor(), &access, id)
            .await?;
        // Revoked: whether its creator is a member no longer matters.
        Ok(Response::new(api_token(&row, true)))
    }
}
