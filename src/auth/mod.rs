//! Authentication and authorization, in one place. `layer` runs before every
//! call: it authenticates the bearer token (`identity`), looks the method up in
//! the policy table built from the proto's `(orgd.v1.policy)` options (`policy`),
//! screens the request's text (`screen`, by the `(orgd.v1.free_text)` options),
//! and either refuses the call or hands the handler a `CallContext` — plus an
//! `OrgAccess` for organization-scoped methods — in the request extensions,
//! each in an `Arc`.

mod identity;
mod jwks;
mod layer;
mod mint;
mod policy;
mod screen;
mod services;
mod verified_tokens;

/// Defined in the store, which takes them; minted only here (see `Mint`).
pub use crate::store::proof::{AccountAccess, OrgAccess};
pub use identity::{Audience, Claims, JwtVerifier, mint_token};
pub use layer::{AuthLayer, AuthState, MAX_BEARER_BYTES, request_id};
pub use mint::Mint;
pub use policy::{OrgPolicy, Policy, PolicyTable};
pub use services::{Checkable, ServiceCaller, ServiceDirectory};

use crate::error::{Error, Result};
use crate::store::Actor;
use crate::store::tokens::TokenCaller;
use crate::store::users::User;

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A person, through an identity-provider token.
    User(User),
    /// A person acting through one of their API tokens: only in the token's
    /// organization, and only within the token's limit.
    ApiToken(TokenCaller),
    /// A backend service (its token subject is configured as a service).
    Service(ServiceCaller),
}

/// Identity and request id of a call that passed the policy check.
#[derive(Debug)]
pub struct CallContext {
    pub request_id: String,
    pub principal: Principal,
}

impl CallContext {
    pub fn actor(&self) -> Actor {
        let (user_id, label) = match &self.principal {
            Principal::User(user) => (
                Some(user.row.id),
                crate::domain::UserRef::name_of(user.row.id),
            ),
            Principal::ApiToken(caller) => (
                Some(caller.user.row.id),
                crate::domain::UserRef::name_of(caller.user.row.id),
            ),
            Principal::Service(service) => (None, service.name()),
        };
        Actor {
            user_id,
            label,
            request_id: self.request_id.clone(),
            token: match &self.principal {
                Principal::ApiToken(caller) => Some(caller.limit.clone()),
                _ => None,
            },
        }
    }

    /// The calling service; the policy layer lets only services reach service
    /// methods.
    pub fn service(&self) -> Result<&ServiceCaller> {
        match &self.principal {
            Principal::Service(service) => Ok(service),
            _ => Err(Error::PermissionDenied(
                "this method is for backend services only".into(),
            )),
        }
    }

    /// The calling user; the policy layer lets only users reach user methods.
    pub fn user(&self) -> Result<&User> {
        match &self.principal {
            Principal::User(user) => Ok(user),
            Principal::ApiToken(caller) => Ok(&caller.user),
            Principal::Service(_) => Err(Error::PermissionDenied(
                "this method needs a user token".into(),
            )),
        }
    }
}
