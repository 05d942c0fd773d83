//! The tower layer that authenticates and authorizes every call before it reaches
//! a handler. Deny by default: a method missing from the policy table, or one
//! without a declared policy, never reaches its handler.

use std::io::Read;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use prost_reflect::DynamicMessage;
use tonic::body::Body;
use tower::{Layer, Service};
use tower_http::request_id::RequestId;

use super::policy::{MethodEntry, OrgPolicy, Policy, PolicyTable, read_string_field};
use super::{
    AccountAccess, CallContext, JwtVerifier, Mint, OrgAccess, Principal, ServiceCaller,
    ServiceDirectory,
};
use crate::domain::{OrgRef, UserRef, count};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::org_row::OrgRow;
use crate::store::proof::{Reach, lacks_permission};
use crate::store::standing::MemberAccess;
use crate::store::tokens::{SECRET_PREFIX, TokenCaller, check_secret_shape};
use crate::store::users::Identity;

/// Methods of the gRPC infrastructure services, open to everybody.
const PUBLIC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.",
    "/grpc.reflection.v1alpha.",
];

/// Everything the layer needs to decide.
pub struct AuthState {
    pub store: Store,
    /// Shared by every call, with the tokens it remembers.
    pub verifier: Arc<JwtVerifier>,
    pub policies: PolicyTable,
    pub services: ServiceDirectory,
    pub max_request_bytes: usize,
}

#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<AuthState>,
}

impl AuthLayer {
    pub fn new(state: AuthState) -> Self {
        AuthLayer {
            state: Arc::new(state),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Arc<AuthState>,
}

impl<S> Service<http::Request<Body>> for AuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The ready service handles this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let request_id = request_id(&request).to_owned();
            match authorize(&state, request, &request_id).await {
                Ok(request) => inner.call(request).await,
                // The access log writes the refusal's code and message.
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The call's request id, which the request-id layer (server::layers) set.
pub fn request_id<B>(request: &http::Request<B>) -> &str {
    request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
}

/// The steps every orgd call passes, in order: what it calls, who calls
/// (headers only), whether that kind of caller may call it, the request read
/// (bounded) and its text screened, then the caller's standing in the
/// organization it targets. Nothing reads the body before the caller is known.
async fn authorize(
    state: &AuthState,
    request: http::Request<Body>,
    request_id: &str,
) -> Result<http::Request<Body>, tonic::Status> {
    let path = request.uri().path().to_owned();
    if PUBLIC_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return Ok(request);
    }
    let Some(entry) = state.policies.get(&path) else {
        return Err(Error::UnknownMethod(format!("unknown method {path}")).into());
    };
    let Some(policy) = &entry.policy else {
        return Err(Error::PermissionDenied(format!(
            "{path} declares no access policy, so nobody may call it"
        ))
        .into());
    };
    let caller = authenticate(state, request.headers()).await?;
    let admitted = admit(state, &path, policy, caller, request_id).await?;
    let (mut parts, body) = request.into_parts();
    let (frame, message) = read_request(state, entry, &mut parts.headers, body).await?;
    // Before any handler parses (and might store) a value.
    if let Some(refusal) = state.policies.screen().refusal(&message) {
        return Err(refusal.into());
    }
    let mut request = http::Request::from_parts(parts, Body::new(Full::new(frame)));
    let principal = match admitted {
        Admitted::Caller(principal) => principal,
        Admitted::InOrg(scope, caller) => {
            let org_ref = target_org(&message, scope)?;
            let (principal, access) =
                authorize_in_target(state, &org_ref, scope, caller, request_id).await?;
            request.extensions_mut().insert(Arc::new(access));
            principal
        }
        Admitted::ForAccount(user_field, principal) => {
            let access = authorize_for_account(&path, &message, user_field, &principal)?;
            request.extensions_mut().insert(Arc::new(access));
            principal
        }
    };
    request.extensions_mut().insert(Arc::new(CallContext {
        request_id: request_id.to_owned(),
        principal,
    }));
    Ok(request)
}

/// Who the bearer token stands for, from the headers alone: a signed-in
/// user's token by its signature, a service's likewise, an API token by one
/// query that also reads its organization and its creator's standing there.
#[allow(clippy::large_enum_variant)] // one per call, on its way to the handler
enum Caller {
    User(Identity),
    ApiToken {
        caller: TokenCaller,
        org: OrgRow,
        member: MemberAccess,
    },
    Service(ServiceCaller),
}

/// The longest bearer token read. Real identity-provider tokens are a few
/// kilobytes; the server's header limit is well above this, so that a longer
/// one is refused here, as a gRPC status, rather than by HTTP/2.
pub const MAX_BEARER_BYTES: usize = 16 * 1024;

async fn authenticate(state: &AuthState, headers: &http::HeaderMap) -> Result<Caller> {
    let header = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Error::Unauthenticated("missing 'authorization: Bearer <token>' metadata".into())
    })?;
    if header.len() > MAX_BEARER_BYTES {
        return Err(Error::Unauthenticated(format!(
            "the bearer token is {} bytes; orgd accepts tokens of up to {MAX_BEARER_BYTES} bytes",
            header.len()
        )));
    }
    let token = header
        .to_str()
        .ok()
        // The scheme is case-insensitive (RFC 7235).
        .and_then(|h| {
            h.get(..7)
                .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                .map(|_| &h[7..])
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("the authorization metadata must be 'Bearer <token>'".into())
        })?;
    if token.starts_with(SECRET_PREFIX) {
        check_secret_shape(token)?;
        let (caller, org, member) = state.store.token_session(token).await?;
        return Ok(Caller::ApiToken {
            caller,
            org,
            member,
        });
    }
    let claims = state.verifier.verify(token).await?;
    if let Some(service) = state.services.caller(&claims.sub) {
        return Ok(Caller::Service(service));
    }
    Ok(Caller::User(claims.to_identity()?))
}

/// A caller the method's policy takes: done, or to be authorized in the
/// organization, or on the account, the request names.
#[allow(clippy::large_enum_variant)] // one per call, on its way to the handler
enum Admitted<'p> {
    Caller(Principal),
    InOrg(&'p OrgPolicy, Caller),
    /// To act on the account the request names at the path (`Policy::Account`).
    ForAccount(&'p [String], Principal),
}

/// Whether the method takes this kind of caller; decided before the request
/// is read.
async fn admit<'p>(
    state: &AuthState,
    path: &str,
    policy: &'p Policy,
    caller: Caller,
    request_id: &str,
) -> Result<Admitted<'p>> {
    Ok(match (policy, caller) {
        (Policy::Service { limited_services }, Caller::Service(service)) => {
            if !limited_services {
                service.ensure_unlimited(path)?;
            }
            Admitted::Caller(Principal::Service(service))
        }
        (Policy::Authenticated { services: true, .. }, Caller::Service(service)) => {
            Admitted::Caller(Principal::Service(service))
        }
        (Policy::Account { user_field }, Caller::Service(service)) => {
            service.ensure_may_act_on_accounts(path)?;
            Admitted::ForAccount(user_field, Principal::Service(service))
        }
        // For any organization: the handler reads which from the request.
        (Policy::Org(scope), Caller::Service(service)) if scope.services => {
            Admitted::Caller(Principal::Service(service))
        }
        (Policy::Service { .. }, _) => {
            return Err(Error::PermissionDenied(format!(
                "{path} is for backend services only"
            )));
        }
        (_, Caller::Service(service)) => {
            // A service asking an organization's question has its own method.
            let instead = if path.ends_with("/CheckPermission") {
                "; services ask orgd.v1.PermissionService/CheckPermission, for any organization"
            } else {
                ""
            };
            return Err(Error::PermissionDenied(format!(
                "{path} needs a user token; {} is a service{instead}",
                service.name()
            )));
        }
        (Policy::Authenticated { .. }, Caller::User(identity)) => Admitted::Caller(
            Principal::User(state.store.ensure_user(&identity, request_id).await?),
        ),
        (
            Policy::Authenticated {
                api_tokens: true, ..
            },
            Caller::ApiToken { caller, .. },
        ) => Admitted::Caller(Principal::ApiToken(caller)),
        // Looked up, never created: acting on an account needs one already.
        (Policy::Account { user_field }, Caller::User(identity)) => {
            let user = state.store.known_user(&identity).await?.ok_or_else(|| {
                Error::NotFound(
                    "you have no orgd account: it was deleted, or you have not used orgd yet"
                        .into(),
                )
            })?;
            Admitted::ForAccount(user_field, Principal::User(user))
        }
        (
            Policy::Authenticated {
                api_tokens: false, ..
            }
            | Policy::Account { .. },
            Caller::ApiToken { .. },
        ) => {
            return Err(Error::PermissionDenied(format!(
                "{path} acts on a user's own account and needs their sign-in; an API token acts only inside its organization"
            )));
        }
        (Policy::Org(scope), caller) => Admitted::InOrg(scope, caller),
    })
}

/// The caller's standing in the organization `org_ref` names, checked against
/// the method's policy.
async fn authorize_in_target(
    state: &AuthState,
    org_ref: &OrgRef,
    scope: &OrgPolicy,
    caller: Caller,
    request_id: &str,
) -> Result<(Principal, OrgAccess)> {
    match caller {
        Caller::User(identity) => {
            // Usually one query answers who the caller is and what they may do
            // there; a new user or a changed profile takes the longer way.
            let (user, found) = match state.store.signed_in_access(&identity, org_ref).await? {
                Some((user, org, access)) => (user, Some((org, access))),
                None => {
                    let user = state.store.ensure_user(&identity, request_id).await?;
                    let found = state.store.org_and_access(org_ref, user.row.id).await?;
                    (user, found)
                }
            };
            let access = authorize_in_org(org_ref, found, None, scope)?;
            Ok((Principal::User(user), access))
        }
        Caller::ApiToken {
            caller,
            org,
            member,
        } => {
            // A token acts in its own organization only.
            let found = org_ref
                .names(org.id, &org.slug)
                .then_some((org, Some(member)));
            let access = authorize_in_org(org_ref, found, Some(&caller), scope)?;
            Ok((Principal::ApiToken(caller), access))
        }
        Caller::Service(_) => unreachable!("admit refuses services in organization methods"),
    }
}

/// The account the request names at `user_field`, which the caller may act
/// on: their own, or as a service anyone's. Another user's is refused the same
/// whether or not it exists, so that nobody learns which accounts do.
fn authorize_for_account(
    path: &str,
    message: &DynamicMessage,
    user_field: &[String],
    principal: &Principal,
) -> Result<AccountAccess> {
    let target = UserRef::parse(
        &user_field.join("."),
        &read_string_field(message, user_field),
    )?;
    match principal {
        Principal::User(user) if user.row.id != target.0 => Err(Error::PermissionDenied(format!(
            "{path} acts on your own account only, {}; another user's is for backend services",
            UserRef::name_of(user.row.id)
        ))),
        _ => Ok(AccountAccess::new(Mint(()), target.0)),
    }
}

/// Reads the (unary) request, at most `max_request_bytes`, and decodes it
/// against the method's input type; returns the uncompressed frame, to pass
/// on, with the decoded message. A gzip-compressed request is passed on
/// decompressed.
async fn read_request(
    state: &AuthState,
    entry: &MethodEntry,
    headers: &mut http::HeaderMap,
    body: Body,
) -> Result<(Bytes, DynamicMessage)> {
    let too_large = || {
        Error::TooLarge(format!(
            "the request is larger than {} or was cut off",
            count(state.max_request_bytes as i64, "byte")
        ))
    };
    let frame = Limited::new(body, state.max_request_bytes + 5)
        .collect()
        .await
        .map_err(|_| too_large())?
        .to_bytes();
    let encoding = headers.remove(GRPC_ENCODING);
    let message = grpc_message(&frame, encoding.as_ref(), state.max_request_bytes)?;
    let decoded = DynamicMessage::decode(entry.input.clone(), message.clone()).map_err(|err| {
        Error::invalid(
            "request",
            format!("the request message does not decode: {err}"),
        )
    })?;
    // An uncompressed frame goes on as it came; an inflated one is framed anew.
    if frame[0] == 0 {
        return Ok((frame, decoded));
    }
    let mut uncompressed = BytesMut::with_capacity(message.len() + 5);
    uncompressed.put_u8(0);
    uncompressed.put_u32(message.len() as u32);
    uncompressed.put(message);
    Ok((uncompressed.freeze(), decoded))
}

const GRPC_ENCODING: &str = "grpc-encoding";

/// The message of a single gRPC frame, inflated when the client compressed it
/// with gzip (up to `max_bytes`).
fn grpc_message(
    frame: &Bytes,
    encoding: Option<&http::HeaderValue>,
    max_bytes: usize,
) -> Result<Bytes> {
    let mut header = frame.clone();
    if header.remaining() < 5 {
        return Err(Error::invalid(
            "request",
            "expected one gRPC message in the request",
        ));
    }
    let compressed = header.get_u8();
    let length = header.get_u32() as usize;
    if header.remaining() != length {
        return Err(Error::invalid(
            "request",
            "expected exactly one gRPC message in the request",
        ));
    }
    if compressed == 0 {
        return Ok(header);
    }
    match encoding.map(http::HeaderValue::as_bytes) {
        Some(b"gzip") => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(header.as_ref())
                .take(max_bytes as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|err| {
                    Error::invalid(
                        "request",
                        format!("the gzip request does not inflate: {err}"),
                    )
                })?;
            if inflated.len() > max_bytes {
                return Err(Error::TooLarge(format!(
                    "the request inflates to more than {}",
                    count(max_bytes as i64, "byte")
                )));
            }
            Ok(inflated.into())
        }
        _ => Err(Error::UnsupportedEncoding(
            "compressed requests must use gzip (grpc-encoding: gzip)".into(),
        )),
    }
}

/// The organization the request targets, read from the policy's field.
fn target_org(message: &DynamicMessage, scope: &OrgPolicy) -> Result<OrgRef> {
    let raw_name = read_string_field(message, &scope.org_field);
    let field = scope.org_field.join(".");
    if scope.child_resource {
        OrgRef::parse_scope(&field, &raw_name)
    } else {
        OrgRef::parse(&field, &raw_name)
    }
}

/// Checks the caller's standing in the organization (`found` with their
/// membership, if any); the request goes on carrying the verdict as `OrgAccess`.
fn authorize_in_org(
    org_ref: &OrgRef,
    found: Option<(OrgRow, Option<MemberAccess>)>,
    token: Option<&TokenCaller>,
    scope: &OrgPolicy,
) -> Result<OrgAccess> {
    // Unknown and foreign organizations look the same, so non-members learn nothing.
    let not_found = || Error::NotFound(format!("organization {} not found", org_ref.name()));
    let (org, mut member) = match found {
        Some((org, Some(member))) => (org, member),
        _ => return Err(not_found()),
    };
    // An API token works in its own organization only, within its limit.
    if let Some(token) = token {
        if org.id != token.org_id {
            return Err(not_found());
        }
        member.limit_to(&token.limit);
    }
    if !scope.allow_deleted {
        org.ensure_live()?;
    }
    let (permission, reach) = match (&scope.permission, &scope.own_permission) {
        (None, _) => (None, Reach::All),
        (Some(permission), _) if member.allows(permission) => (Some(permission), Reach::All),
        (Some(permission), Some(own)) if member.allows(own) => (
            Some(own),
            Reach::Own {
                broader: permission.clone(),
            },
        ),
        (Some(permission), own) => {
            return Err(lacks_permission(&org, &member, permission, own.as_ref()));
        }
    };
    Ok(OrgAccess::new(
        Mint(()),
        org,
        member,
        permission.cloned(),
        reach,
        scope.allow_deleted,
    ))
}
