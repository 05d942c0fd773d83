//! The activity trail. Every mutation calls `record` inside its own transaction,
//! so a change, its audit row and its event in the change feed commit or roll
//! back together.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use scoped_futures::ScopedFutureExt;

use diesel::sql_types::{Jsonb, Nullable, Text, Uuid as SqlUuid};

use super::{Conn, KeepPrepared, Store, schema::activity};
use crate::domain::{Action, PageRequest, PageToken};
use crate::error::Result;

/// Who performs a mutation, and under which request id.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    /// `users/{id}`, `services/{subject}` or `system`.
    pub label: String,
    pub request_id: String,
    /// Set when the user acts through an API token: what the token allows.
    pub token: Option<TokenLimit>,
}

/// The roles and permissions an API token carries; its caller holds at most
/// these, whatever more its creator holds.
#[derive(Debug, Clone)]
pub struct TokenLimit {
    pub token_id: Uuid,
    /// The one organization the token acts in.
    pub org_id: Uuid,
    pub roles: std::collections::BTreeSet<String>,
    pub permissions: std::collections::BTreeSet<String>,
}

impl Actor {
    /// Whether the actor may act in `org_id` at all: through an API token, only
    /// in the token's organization.
    pub fn reaches(&self, org_id: Uuid) -> bool {
        self.token
            .as_ref()
            .is_none_or(|token| token.org_id == org_id)
    }

    /// Refuses what a person must do with their own sign-in, not a token.
    pub fn ensure_signed_in(&self, what: &str) -> crate::error::Result<()> {
        match self.token {
            None => Ok(()),
            Some(_) => Err(crate::error::Error::PermissionDenied(format!(
                "{what} needs your own sign-in, not an API token"
            ))),
        }
    }

    /// orgd itself, e.g. the purge of expired deletions.
    pub fn system(request_id: impl Into<String>) -> Self {
        Actor {
            user_id: None,
            label: "system".into(),
            request_id: request_id.into(),
            token: None,
        }
    }
}

/// Records which API token a mutation came through, beside its own details.
fn with_token(details: serde_json::Value, actor: &Actor) -> serde_json::Value {
    match (details, &actor.token) {
        (serde_json::Value::Object(mut fields), Some(token)) => {
            fields.insert("api_token".into(), token.token_id.to_string().into());
            serde_json::Value::Object(fields)
        }
        (details, _) => details,
    }
}

/// Records a change: its activity row, and its event in the change feed
/// (`super::events`), in one statement of the change's transaction.
pub async fn record(
    conn: &Conn,
    actor: &Actor,
    org_id: Option<Uuid>,
    action: Action,
    target: &str,
    details: serde_json::Value,
) -> Result<()> {
    diesel::sql_query(
        "WITH trail AS (
             INSERT INTO activity (id, org_id, actor_user_id, actor, action, target, request_id, details)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8))
         INSERT INTO events (id, type, org_id, subject, actor, request_id, data)
         VALUES ($1, $9, $2, $6, $4, $7, $8)",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Nullable<SqlUuid>, _>(org_id)
    .bind::<Nullable<SqlUuid>, _>(actor.user_id)
    .bind::<Text, _>(&actor.label)
    .bind::<Text, _>(action.as_str())
    .bind::<Text, _>(target)
    .bind::<Text, _>(&actor.request_id)
    .bind::<Jsonb, _>(with_token(details, actor))
    .bind::<Text, _>(action.event_type())
    .prepared()
    .execute(&mut &*conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = activity, check_for_backend(diesel::pg::Pg))]
pub struct ActivityRow {
    pub id: Uuid,
    pub org_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: String,
    pub details: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Which activities of an organization to list.
#[derive(Debug, Default)]
pub struct ActivityFilter {
    pub actor: Option<String>,
    pub action: Option<ActionFilter>,
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    pub end: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug)]
pub enum ActionFilter {
    Exact(String),
    /// Every action starting with this (e.g. `member.`).
    Prefix(String),
}

diesel::define_sql_function!(fn starts_with(text: diesel::sql_types::Text, prefix: diesel::sql_types::Text) -> diesel::sql_types::Bool);

impl Store {
    /// A page of `org_id`'s activities, newest first.
    pub async fn list_activities(
        &self,
        org_id: Uuid,
        filter: ActivityFilter,
        page: PageRequest,
    ) -> Result<(Vec<ActivityRow>, String)> {
        let filter = &filter;
        let rows = self
            .read(|conn| {
                async move {
                    let mut query = activity::table
                        .filter(activity::org_id.eq(org_id))
                        .order((activity::created_at.desc(), activity::id.desc()))
                        .limit(page.limit + 1)
                        .select(ActivityRow::as_select())
                        .into_boxed();
                    if let Some(actor) = &filter.actor {
                        query = query.filter(activity::actor.eq(actor));
                    }
                    query = match &filter.action {
                        Some(ActionFilter::Exact(action)) => {
                            query.filter(activity::action.eq(action))
                        }
                        Some(ActionFilter::Prefix(prefix)) => {
                            query.filter(starts_with(activity::action, prefix))
                        }
                        None => query,
                    };
                    if let Some(start) = filter.start {
                        query = query.filter(activity::created_at.ge(start));
                    }
                    if let Some(end) = filter.end {
                        query = query.filter(activity::created_at.lt(end));
                    }
                    // After the last row of the previous page: the first
                    // condition bounds the scan of `activity_org_page`, the
                    // second drops the rows of the same instant up to it.
                    if let Some(after) = page.after {
                        query = query.filter(activity::created_at.le(after.time)).filter(
                            activity::created_at
                                .lt(after.time)
                                .or(activity::id.lt(after.id)),
                        );
                    }
                    Ok(query.load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(rows, |row: &ActivityRow| PageToken {
            time: row.created_at,
            id: row.id,
        }))
    }
}
