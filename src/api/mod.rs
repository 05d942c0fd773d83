//! gRPC handlers, one file per service: validate and translate proto ⇄ domain,
//! call the store. Authorization already happened in `crate::auth`; handlers take
//! its verdict from the request extensions.

pub mod activity;
pub mod billing;
pub mod member;
pub mod org;
pub mod resource;
pub mod token;

use chrono::{DateTime, Utc};
use tonic::Request;

use crate::auth::{CallContext, OrgAccess};
use crate::error::{Error, Result};

/// The caller of a call that passed the policy layer.
fn call_context<T>(request: &Request<T>) -> Result<CallContext> {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("the auth layer did not run for this call")))
}

/// The organization an org-scoped call targets, with the caller's verified access.
fn org_access<T>(request: &Request<T>) -> Result<OrgAccess> {
    request
        .extensions()
        .get::<OrgAccess>()
        .cloned()
        .ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "the auth layer did not resolve an organization for this call"
            ))
        })
}

fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// A request's timestamp as a time.
fn datetime(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or_else(|| Error::invalid(field, "not a valid timestamp"))
}

/// An optional string field: empty means "not given".
fn optional(raw: &str) -> Option<&str> {
    (!raw.is_empty()).then_some(raw)
}
