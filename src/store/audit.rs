//! The activity trail. Every mutation calls `record` inside its own transaction,
//! so a change and its audit row commit or roll back together.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{Conn, schema::activity};
use crate::error::Result;

/// Who performs a mutation, and under which request id.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    /// `users/{id}`, `services/{subject}` or `system`.
    pub label: String,
    pub request_id: String,
}

impl Actor {
    /// orgd itself, e.g. the purge of expired deletions.
    pub fn system(request_id: impl Into<String>) -> Self {
        Actor {
            user_id: None,
            label: "system".into(),
            request_id: request_id.into(),
        }
    }
}

pub async fn record(
    conn: &mut Conn,
    actor: &Actor,
    org_id: Option<Uuid>,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<()> {
    diesel::insert_into(activity::table)
        .values((
            activity::id.eq(Uuid::now_v7()),
            activity::org_id.eq(org_id),
            activity::actor_user_id.eq(actor.user_id),
            activity::actor.eq(&actor.label),
            activity::action.eq(action),
            activity::target.eq(target),
            activity::request_id.eq(&actor.request_id),
            activity::details.eq(details),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
