//! The tower layer that authenticates and authorizes every call before it reaches
//! a handler. Deny by default: a method missing from the policy table, or one
//! without a declared policy, never reaches its handler.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use prost_reflect::{DynamicMessage, Value};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

use super::policy::{MethodEntry, OrgPolicy, Policy, PolicyTable, read_string_field};
use super::{CallContext, JwtVerifier, OrgAccess, Principal};
use crate::domain::{OrgRef, card_number_refusal, find_card_number};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::access::MemberAccess;
use crate::store::orgs::OrgRow;
use crate::store::tokens::{SECRET_PREFIX, TokenCaller, check_secret_shape};
use crate::store::users::Identity;

/// Methods of the gRPC infrastructure services, open to everybody.
const PUBLIC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.",
    "/grpc.reflection.v1alpha.",
];

const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything the layer needs to decide.
pub struct AuthState {
    pub store: Store,
    /// Shared by every event loop, with the tokens it remembers.
    pub verifier: Arc<JwtVerifier>,
    pub policies: PolicyTable,
    pub service_subjects: HashSet<String>,
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
        let request_id = request_id(&request);
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!("rpc", %method, %request_id);
        Box::pin(
            async move {
                let started = Instant::now();
                let mut response = match authorize(&state, request, &request_id).await {
                    Ok(request) => inner.call(request).await?,
                    Err(status) => {
                        tracing::info!(code = ?status.code(), message = status.message(), "call refused");
                        status.into_http()
                    }
                };
                if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "call finished");
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The caller's `x-request-id` if it is sane, else a new one.
fn request_id(request: &http::Request<Body>) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

async fn authorize(
    state: &AuthState,
    mut request: http::Request<Body>,
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
    let bearer = authenticate(state, request.headers()).await?;
    // Every orgd method is unary: read the message once, to screen it and to find
    // the organization it targets.
    let (parts, body) = request.into_parts();
    let screened = decode_request(state, entry, body)
        .await
        .and_then(|(bytes, message)| match card_number_field(&message, "") {
            Some(field) => Err(card_number_refusal(&field)),
            None => Ok((bytes, message)),
        });
    let (bytes, message) = match screened {
        Ok(screened) => screened,
        Err(refusal) => return Err(unauthenticated_first(state, &bearer, refusal).await),
    };
    request = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
    let principal = match (policy, &bearer) {
        (Policy::Service, Bearer::Service(subject)) => Principal::Service {
            subject: subject.clone(),
        },
        (Policy::Service, _) => {
            let refusal = Error::PermissionDenied(format!("{path} is for backend services only"));
            return Err(unauthenticated_first(state, &bearer, refusal).await);
        }
        (_, Bearer::Service(subject)) => {
            return Err(Error::PermissionDenied(format!(
                "{path} needs a user token; services/{subject} is a service"
            ))
            .into());
        }
        (Policy::Authenticated { .. }, Bearer::User(identity)) => {
            Principal::User(state.store.ensure_user(identity, request_id).await?)
        }
        (Policy::Authenticated { api_tokens: true }, Bearer::ApiToken(secret)) => {
            Principal::ApiToken(state.store.authenticate_api_token(secret).await?)
        }
        (Policy::Authenticated { api_tokens: false }, Bearer::ApiToken(_)) => {
            let refusal = Error::PermissionDenied(format!(
                "{path} acts on a user's own account and needs their sign-in; an API token acts only inside its organization"
            ));
            return Err(unauthenticated_first(state, &bearer, refusal).await);
        }
        (Policy::Org(scope), Bearer::User(identity)) => {
            let org_ref = target_org(&message, scope)?;
            // Usually one query answers who the caller is and what they may do
            // there; a new user or a changed profile takes the longer way.
            let (user, found) = match state.store.signed_in_access(identity, &org_ref).await? {
                Some((user, org, access)) => (user, Some((org, access))),
                None => {
                    let user = state.store.ensure_user(identity, request_id).await?;
                    let found = state.store.org_and_access(&org_ref, user.row.id).await?;
                    (user, found)
                }
            };
            let access = authorize_in_org(&org_ref, found, None, scope)?;
            request.extensions_mut().insert(Arc::new(access));
            Principal::User(user)
        }
        (Policy::Org(scope), Bearer::ApiToken(secret)) => {
            let org_ref = match target_org(&message, scope) {
                Ok(org_ref) => org_ref,
                Err(refusal) => return Err(unauthenticated_first(state, &bearer, refusal).await),
            };
            // One query checks the token and reads its creator's access.
            let (caller, found) = state.store.token_access(secret, &org_ref).await?;
            let access = authorize_in_org(&org_ref, found, Some(&caller), scope)?;
            request.extensions_mut().insert(Arc::new(access));
            Principal::ApiToken(caller)
        }
    };
    request.extensions_mut().insert(Arc::new(CallContext {
        request_id: request_id.to_owned(),
        principal,
    }));
    Ok(request)
}

/// Who the bearer token stands for. Signatures are checked before the request
/// is read; a signed-in user is looked up with their target, later. An API
/// token is checked later too, with the organization its call names, in the
/// same query: until then it is only the secret the caller sent.
enum Bearer {
    User(Identity),
    ApiToken(String),
    Service(String),
}

async fn authenticate(state: &AuthState, headers: &http::HeaderMap) -> Result<Bearer> {
    let header = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Error::Unauthenticated("missing 'authorization: Bearer <token>' metadata".into())
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("the authorization metadata must be 'Bearer <token>'".into())
        })?;
    if token.starts_with(SECRET_PREFIX) {
        check_secret_shape(token)?;
        return Ok(Bearer::ApiToken(token.to_owned()));
    }
    let claims = state.verifier.verify(token).await?;
    if state.service_subjects.contains(&claims.sub) {
        return Ok(Bearer::Service(claims.sub.clone()));
    }
    Ok(Bearer::User(claims.to_identity()?))
}

/// `refusal`, unless the call came with an API token that does not pass (or
/// could not be checked: that error wins too): a caller refused before their
/// token was checked is told about the token first, as one with a bad
/// signature is, and learns nothing of the rest.
async fn unauthenticated_first(
    state: &AuthState,
    bearer: &Bearer,
    refusal: Error,
) -> tonic::Status {
    if let Bearer::ApiToken(secret) = bearer
        && let Err(unauthenticated) = state.store.authenticate_api_token(secret).await
    {
        return unauthenticated.into();
    }
    refusal.into()
}

/// Buffers the (unary) request and decodes it against the method's input type;
/// returns the raw frame, to pass on, with the decoded message.
async fn decode_request(
    state: &AuthState,
    entry: &MethodEntry,
    body: Body,
) -> Result<(Bytes, DynamicMessage)> {
    let bytes = Limited::new(body, state.max_request_bytes + 5)
        .collect()
        .await
        .map_err(|_| {
            Error::TooLarge(format!(
                "the request is larger than {} bytes or was cut off",
                state.max_request_bytes
            ))
        })?
        .to_bytes();
    let message = grpc_message(&bytes)?;
    let decoded = DynamicMessage::decode(entry.input.clone(), message).map_err(|err| {
        Error::invalid(
            "request",
            format!("the request message does not decode: {err}"),
        )
    })?;
    Ok((bytes, decoded))
}

/// The path of the first text field of `message` (nested messages and lists
/// included) that holds a card number. orgd takes card numbers nowhere: checking
/// every field here, before any handler parses (and might echo) a value, keeps
/// them out of errors, logs and the database.
fn card_number_field(message: &DynamicMessage, prefix: &str) -> Option<String> {
    let path_of = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let in_value = |value: &Value, path: String| match value {
        Value::String(text) if find_card_number(text) => Some(path),
        Value::Message(inner) => card_number_field(inner, &path),
        _ => None,
    };
    message.fields().find_map(|(field, value)| {
        let path = path_of(field.name());
        match value {
            Value::List(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| in_value(item, format!("{path}[{i}]"))),
            other => in_value(other, path),
        }
    })
}

/// The message of a single uncompressed gRPC frame.
fn grpc_message(frame: &Bytes) -> Result<Bytes> {
    let mut header = frame.clone();
    if header.remaining() < 5 {
        return Err(Error::invalid(
            "request",
            "expected one gRPC message in the request",
        ));
    }
    let compressed = header.get_u8();
    let length = header.get_u32() as usize;
    if compressed != 0 {
        return Err(Error::invalid(
            "request",
            "compressed requests are not supported",
        ));
    }
    if header.remaining() != length {
        return Err(Error::invalid(
            "request",
            "expected exactly one gRPC message in the request",
        ));
    }
    Ok(header)
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
    if let Some(permission) = &scope.permission
        && !member.allows(permission)
    {
        let roles = if member.roles.is_empty() {
            "none".to_owned()
        } else {
            member.roles.join(", ")
        };
        return Err(Error::PermissionDenied(format!(
            "permission '{permission}' is required in organization {}; your roles there: {roles}",
            org_ref.name()
        )));
    }
    Ok(OrgAccess { org, member })
}
