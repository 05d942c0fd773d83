//! ActivityService: the organization's audit trail, newest first.

use tonic::{Request, Response, Status};

use super::{datetime, optional, org_access, timestamp};
use crate::domain::PageRequest;
use crate::error::{Error, Result};
use crate::pb::{self, activity_service_server::ActivityService};
use crate::store::Store;
use crate::store::audit::{ActionFilter, ActivityFilter, ActivityRow};

pub struct ActivityApi {
    store: Store,
}

impl ActivityApi {
    pub fn new(store: Store) -> Self {
        ActivityApi { store }
    }
}

fn activity(row: ActivityRow) -> pb::Activity {
    let org = row
        .org_id
        .map(crate::domain::OrgRef::name_of)
        .unwrap_or_default();
    pb::Activity {
        name: format!("{org}/activities/{}", row.id),
        actor: row.actor,
        action: row.action,
        target: row.target,
        request_id: row.request_id,
        details: match json_value(row.details).kind {
            Some(prost_types::value::Kind::StructValue(details)) => Some(details),
            _ => None,
        },
        create_time: Some(timestamp(row.created_at)),
    }
}

/// A JSON value as a `google.protobuf.Value`.
fn json_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields
                .into_iter()
                .map(|(key, value)| (key, json_value(value)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// `member.update`, or `member.*` for every action under `member.`.
fn action_filter(raw: &str) -> Result<Option<ActionFilter>> {
    let Some(raw) = optional(raw) else {
        return Ok(None);
    };
    let (name, prefix) = match raw.strip_suffix('*') {
        Some(prefix) => (prefix, true),
        None => (raw, false),
    };
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
    if !valid || (prefix && !name.ends_with('.')) {
        return Err(Error::invalid(
            "action",
            "expected an action such as member.update, or a prefix such as member.*",
        ));
    }
    Ok(Some(if prefix {
        ActionFilter::Prefix(name.to_owned())
    } else {
        ActionFilter::Exact(name.to_owned())
    }))
}

#[tonic::async_trait]
impl ActivityService for ActivityApi {
    async fn list_activities(
        &self,
        request: Request<pb::ListActivitiesRequest>,
    ) -> Result<Response<pb::ListActivitiesResponse>, Status> {
        let access = org_access(&request)?;
        let body = request.get_ref();
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let filter = ActivityFilter {
            actor: optional(&body.actor).map(str::to_owned),
            action: action_filter(&body.action)?,
            start: body
                .start_time
                .as_ref()
                .map(|t| datetime("start_time", t))
                .transpose()?,
            end: body
                .end_time
                .as_ref()
                .map(|t| datetime("end_time", t))
                .transpose()?,
        };
        if let (Some(start), Some(end)) = (filter.start, filter.end)
            && start >= end
        {
            return Err(Error::invalid("end_time", "end_time must be after start_time").into());
        }
        let (rows, next_page_token) = self
            .store
            .list_activities(access.org().id, filter, page)
            .await?;
        Ok(Response::new(pb::ListActivitiesResponse {
            activities: rows.into_iter().map(activity).collect(),
            next_page_token,
        }))
    }
}
