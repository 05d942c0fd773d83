//! gRPC handlers, one file per service: validate and translate proto ⇄ domain,
//! call the store. Authorization already happened in `crate::auth`; handlers take
//! its verdict from the request extensions.

pub mod activity;
pub mod billing;
pub mod event;
pub mod member;
pub mod org;
pub mod permission;
pub mod resource;
pub mod token;
pub mod webhook;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::Request;

use crate::auth::{AccountAccess, CallContext, OrgAccess, PolicyTable};
use crate::domain::{ChildName, Permission, UserName, quoted};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::users::User;

/// The caller of a call that passed the policy layer. Shared, not copied: a
/// copy would cost an allocation per string of the caller's profile, every call.
fn call_context<T>(request: &Request<T>) -> Result<Arc<CallContext>> {
    request
        .extensions()
        .get::<Arc<CallContext>>()
        .cloned()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("the auth layer did not run for this call")))
}

/// The organization an org-scoped call targets, with the caller's verified access
/// (shared, as `call_context`).
fn org_access<T>(request: &Request<T>) -> Result<Arc<OrgAccess>> {
    proof(request, "an organization")
}

/// The account a call on a user's account may act on, as the policy layer
/// verified it.
fn account_access<T>(request: &Request<T>) -> Result<Arc<AccountAccess>> {
    proof(request, "an account")
}

/// The proof of type `P` the policy layer left for this call; `what` it
/// resolves, for the error should it be missing.
fn proof<P: Send + Sync + 'static, T>(request: &Request<T>, what: &str) -> Result<Arc<P>> {
    request
        .extensions()
        .get::<Arc<P>>()
        .cloned()
        .ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "the auth layer did not resolve {what} for this call"
            ))
        })
}

/// The permission `method` of `service` declares in its proto policy, for a
/// handler that needs it outside that method (the name then lives only in the
/// proto). orgd's policies are checked when its tests build the table.
fn declared_permission(service: &str, method: &str) -> Permission {
    PolicyTable::orgd()
        .permission_of(&format!("/{service}/{method}"))
        .unwrap_or_else(|| panic!("{service}/{method} declares no permission"))
        .clone()
}

fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// The id in `raw`, a resource of `collection` that must lie in the organization
/// the call was authorized for.
fn child_id(field: &str, raw: &str, collection: &str, access: &OrgAccess) -> Result<uuid::Uuid> {
    let name = ChildName::parse(field, raw, collection)?;
    if !name.org.names(access.org().id, &access.org().slug) {
        return Err(Error::invalid(
            field,
            format!(
                "{} is not in the organization of this request, {}",
                quoted(raw),
                access.org().described()
            ),
        ));
    }
    Ok(name.id)
}

/// The user `raw` names, `users/{id}` or `subjects/{subject}`: an unknown id
/// is NOT_FOUND, an unknown subject `None`, a user orgd has not seen yet.
async fn named_user(store: &Store, field: &str, raw: &str) -> Result<Option<User>> {
    match UserName::parse(field, raw)? {
        UserName::Id(id) => match store.user_by_id(id).await? {
            None => Err(Error::NotFound(format!("user {} not found", quoted(raw)))),
            found => Ok(found),
        },
        UserName::Subject(subject) => store.user_by_subject(&subject).await,
    }
}

/// A `token` field holding a secret from a message `source` (e.g. "the invitation
/// email"), trimmed.
fn emailed_token<'a>(raw: &'a str, source: &str) -> Result<&'a str> {
    match raw.trim() {
        "" => Err(Error::invalid(
            "token",
            format!("the token from {source} is required"),
        )),
        token if token.len() > 256 => Err(Error::invalid("token", "the token is too long")),
        token => Ok(token),
    }
}

/// A request's timestamp as a time, within google.protobuf.Timestamp's range
/// (years 1 to 9999), which PostgreSQL can also hold.
fn datetime(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .filter(crate::domain::is_storable_time)
        .ok_or_else(|| {
            Error::invalid(
                field,
                "not a valid timestamp: seconds from 0001-01-01 to 9999-12-31, nanos from 0 to 999,999,999",
            )
        })
}

/// The paths of an update's mask (`field`), refused when it names none;
/// `updatable` lists the ones the update can change.
fn mask_paths<'a>(
    field: &str,
    mask: Option<&'a prost_types::FieldMask>,
    updatable: &str,
) -> Result<&'a [String]> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            field,
            format!("name the fields to change; updatable: {updatable}"),
        ));
    }
    Ok(paths)
}

/// The refusal of a mask (`field`) naming `path`, which the update cannot change.
fn not_updatable(field: &str, path: &str, updatable: &str) -> Error {
    Error::invalid(
        field,
        format!("{} cannot be updated; updatable: {updatable}", quoted(path)),
    )
}

/// A create's `request_id` (AIP-155), a UUID, if given: a retry with it
/// returns what its first attempt made.
fn request_id(raw: &str) -> Result<Option<uuid::Uuid>> {
    optional(raw)
        .map(|raw| {
            uuid::Uuid::try_parse(raw).map_err(|_| {
                Error::invalid(
                    "request_id",
                    format!(
                        "{} is not a UUID; use a fresh UUID per request",
                        quoted(raw)
                    ),
                )
            })
        })
        .transpose()
}

/// An optional string field: empty means "not given".
fn optional(raw: &str) -> Option<&str> {
    (!raw.is_empty()).then_some(raw)
}
