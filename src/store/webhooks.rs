//! Webhook endpoints: an organization's (changed under its lock, as every
//! change of an organization is) or a backend service's, each with its signing
//! secret sealed (`crate::webhooks::sealing`) and its own cursor into the
//! change feed. Every change is audited in its transaction. Delivery is in
//! `webhook_delivery`.

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Bytea, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::RunQueryDsl;
use scoped_futures::{ScopedBoxFuture, ScopedFutureExt};
use uuid::Uuid;

use super::events::Cursor;
use super::proof::OrgAccess;
use super::{Actor, Conn, Store, audit};
use crate::domain::{Action, ChildName, OrgRef, PageRequest, PageToken, quoted};
use crate::error::{Error, Result};

pub const WEBHOOK_ENDPOINTS: &str = "webhookEndpoints";

/// Whose endpoints a call manages.
#[derive(Clone, Copy)]
pub enum Owner<'a> {
    /// An organization's, by a member holding `webhooks.manage`.
    Org(&'a OrgAccess),
    /// A backend service's own (by its subject), for every organization.
    Service(&'a str),
}

impl Owner<'_> {
    /// The `org_id` and `service` columns of the owner's endpoints.
    fn keys(&self) -> (Option<Uuid>, Option<String>) {
        match self {
            Owner::Org(access) => (Some(access.org().id), None),
            Owner::Service(subject) => (None, Some((*subject).to_owned())),
        }
    }
}

/// The columns `EndpointRow` reads, from `webhook_endpoints w`.
const COLUMNS: &str = "w.id, w.org_id, w.service, w.org_filter, w.url, w.description, \
     w.type_prefixes, w.creator, w.created_at, w.updated_at, \
     w.cursor_txid::text::bigint AS cursor_txid, w.cursor_position, w.failures, w.retry_at, \
     w.disabled_at, w.disabled_reason";

/// The owner's endpoints only (`$1` org_id, `$2` service).
const OWNED: &str = "w.org_id IS NOT DISTINCT FROM $1 AND w.service IS NOT DISTINCT FROM $2";

#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct EndpointRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub org_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    pub service: Option<String>,
    /// A service's endpoint: only these organizations' events.
    #[diesel(sql_type = Nullable<Array<SqlUuid>>)]
    pub org_filter: Option<Vec<Uuid>>,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Array<Text>)]
    pub type_prefixes: Vec<String>,
    #[diesel(sql_type = Text)]
    pub creator: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    cursor_txid: i64,
    #[diesel(sql_type = BigInt)]
    cursor_position: i64,
    #[diesel(sql_type = Integer)]
    pub failures: i32,
    #[diesel(sql_type = Timestamptz)]
    pub retry_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub disabled_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub disabled_reason: Option<String>,
}

impl EndpointRow {
    pub fn name(&self) -> String {
        endpoint_name(self.id, self.org_id)
    }

    /// Where delivery stands in the feed.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            txid: self.cursor_txid,
            position: self.cursor_position,
        }
    }
}

/// `organizations/{org}/webhookEndpoints/{id}`, or `webhookEndpoints/{id}`
/// for a service's endpoint.
pub fn endpoint_name(id: Uuid, org_id: Option<Uuid>) -> String {
    match org_id {
        Some(org_id) => ChildName::name_of(org_id, WEBHOOK_ENDPOINTS, id),
        None => format!("{WEBHOOK_ENDPOINTS}/{id}"),
    }
}

/// An endpoint to register, validated.
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub type_prefixes: Vec<String>,
    pub org_filter: Option<Vec<Uuid>>,
}

/// The signing secret of a new endpoint, sealed (`webhooks::sealing`).
pub struct SealedSecret {
    pub sealed: Vec<u8>,
    pub key_id: String,
}

/// Whether delivery to an endpoint runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Enable,
    Disable,
}

/// The fields UpdateWebhookEndpoint changes, validated; `None`: unchanged.
#[derive(Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub type_prefixes: Option<Vec<String>>,
    pub org_filter: Option<Option<Vec<Uuid>>>,
    pub switch: Option<Switch>,
}

/// The URL as the audit trail keeps it: its query may hold a token, so only
/// that it had one is kept.
fn audited_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

fn audited(row: &EndpointRow) -> serde_json::Value {
    serde_json::json!({
        "url": audited_url(&row.url),
        "description": row.description,
        "event_type_prefixes": row.type_prefixes,
        "organizations": row.org_filter.as_ref().map(|ids| ids.iter().map(|id| OrgRef::name_of(*id)).collect::<Vec<_>>()),
        "state": if row.disabled_at.is_some() { "disabled" } else { "enabled" },
    })
}

fn not_found(id: Uuid, owner: &Owner<'_>) -> Error {
    let (org_id, _) = owner.keys();
    Error::NotFound(format!(
        "webhook endpoint {} not found",
        endpoint_name(id, org_id)
    ))
}

/// The owner's endpoint `id`, locked until the transaction ends.
async fn lock_endpoint(conn: &mut Conn, owner: &Owner<'_>, id: Uuid) -> Result<EndpointRow> {
    let (org_id, service) = owner.keys();
    let rows: Vec<EndpointRow> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints w WHERE {OWNED} AND w.id = $3 FOR UPDATE"
    ))
    .bind::<Nullable<SqlUuid>, _>(org_id)
    .bind::<Nullable<Text>, _>(service)
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    rows.into_iter().next().ok_or_else(|| not_found(id, owner))
}

impl Store {
    /// Runs `op` in a transaction: under the organization's lock, with the
    /// caller's standing checked again (`change`), for an organization's
    /// endpoints; as a plain transaction for a service's.
    async fn change_endpoints<'a, T, F>(
        &self,
        owner: &Owner<'a>,
        actor: &'a Actor,
        mut op: F,
    ) -> Result<T>
    where
        T: Send + 'a,
        F: for<'c> FnMut(&'c mut Conn) -> ScopedBoxFuture<'a, 'c, Result<T>> + Send + 'a,
    {
        match *owner {
            Owner::Org(access) => self.change(access, actor, move |conn, _| op(conn)).await,
            Owner::Service(_) => self.write(op).await,
        }
    }

    /// Registers an endpoint whose delivery starts at the feed's present: the
    /// oldest transaction still open, so it gets its own creation's event and
    /// possibly a few that committed moments before, never one missed.
    pub async fn create_webhook_endpoint(
        &self,
        actor: &Actor,
        owner: Owner<'_>,
        id: Uuid,
        new: NewEndpoint,
        secret: SealedSecret,
    ) -> Result<EndpointRow> {
        let (new, secret, (org_id, service)) = (&new, &secret, owner.keys());
        let (org_id, service) = (&org_id, &service);
        self.change_endpoints(&owner, actor, |conn| {
            async move {
                let row: EndpointRow = diesel::sql_query(format!(
                    "WITH w AS (
                         INSERT INTO webhook_endpoints (id, org_id, service, org_filter, url, description,
                             type_prefixes, secret_sealed, key_id, creator, cursor_txid, cursor_position)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                             pg_snapshot_xmin(pg_current_snapshot()), 0)
                         RETURNING *)
                     SELECT {COLUMNS} FROM w"
                ))
                .bind::<SqlUuid, _>(id)
                .bind::<Nullable<SqlUuid>, _>(*org_id)
                .bind::<Nullable<Text>, _>(service.as_deref())
                .bind::<Nullable<Array<SqlUuid>>, _>(new.org_filter.as_deref())
                .bind::<Text, _>(&new.url)
                .bind::<Text, _>(&new.description)
                .bind::<Array<Text>, _>(&new.type_prefixes)
                .bind::<Bytea, _>(&secret.sealed)
                .bind::<Text, _>(&secret.key_id)
                .bind::<Text, _>(&actor.label)
                .get_result(conn)
                .await?;
                audit::record(
                    conn,
                    actor,
                    *org_id,
                    Action::WebhookEndpointCreate,
                    &row.name(),
                    audited(&row),
                )
                .await?;
                Ok(row)
            }
            .scope_boxed()
        })
        .await
    }

    pub async fn get_webhook_endpoint(&self, owner: Owner<'_>, id: Uuid) -> Result<EndpointRow> {
        let (org_id, service) = owner.keys();
        let rows: Vec<EndpointRow> = self
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(format!(
                        "SELECT {COLUMNS} FROM webhook_endpoints w WHERE {OWNED} AND w.id = $3"
                    ))
                    .bind::<Nullable<SqlUuid>, _>(org_id)
                    .bind::<Nullable<Text>, _>(service)
                    .bind::<SqlUuid, _>(id)
                    .load(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        rows.into_iter().next().ok_or_else(|| not_found(id, &owner))
    }

    /// A page of the owner's endpoints, newest first.
    pub async fn list_webhook_endpoints(
        &self,
        owner: Owner<'_>,
        page: PageRequest,
    ) -> Result<(Vec<EndpointRow>, String)> {
        let (org_id, service) = owner.keys();
        let (after_time, after_id) = match page.after {
            Some(after) => (Some(after.time), Some(after.id)),
            None => (None, None),
        };
        let rows: Vec<EndpointRow> = self
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(format!(
                        "SELECT {COLUMNS} FROM webhook_endpoints w WHERE {OWNED}
                           AND ($3::timestamptz IS NULL OR (w.created_at, w.id) < ($3, $4))
                         ORDER BY w.created_at DESC, w.id DESC LIMIT $5"
                    ))
                    .bind::<Nullable<SqlUuid>, _>(org_id)
                    .bind::<Nullable<Text>, _>(service)
                    .bind::<Nullable<Timestamptz>, _>(after_time)
                    .bind::<Nullable<SqlUuid>, _>(after_id)
                    .bind::<BigInt, _>(page.limit + 1)
                    .load(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(rows, |row: &EndpointRow| PageToken {
            time: row.created_at,
            id: row.id,
        }))
    }

    /// Applies `changes`. A new URL, and enabling, start delivery again at
    /// once, from where it stopped.
    pub async fn update_webhook_endpoint(
        &self,
        actor: &Actor,
        owner: Owner<'_>,
        id: Uuid,
        changes: EndpointChanges,
    ) -> Result<EndpointRow> {
        let changes = &changes;
        self.change_endpoints(&owner, actor, |conn| {
            async move {
                let old = lock_endpoint(conn, &owner, id).await?;
                let restart = changes.url.as_ref().is_some_and(|url| *url != old.url)
                    || (changes.switch == Some(Switch::Enable) && old.disabled_at.is_some());
                let disabled_reason = match changes.switch {
                    Some(Switch::Enable) => None,
                    Some(Switch::Disable) => old
                        .disabled_reason
                        .clone()
                        .or_else(|| Some(format!("disabled by {}", actor.label))),
                    None => old.disabled_reason.clone(),
                };
                let row: EndpointRow = diesel::sql_query(format!(
                    "WITH w AS (
                         UPDATE webhook_endpoints SET url = $2, description = $3, type_prefixes = $4,
                             org_filter = $5, disabled_reason = $6,
                             disabled_at = CASE WHEN $6::text IS NULL THEN NULL
                                                ELSE coalesce(disabled_at, now()) END,
                             failures = CASE WHEN $7 THEN 0 ELSE failures END,
                             retry_at = CASE WHEN $7 THEN now() ELSE retry_at END,
                             updated_at = now()
                         WHERE id = $1 RETURNING *)
                     SELECT {COLUMNS} FROM w"
                ))
                .bind::<SqlUuid, _>(id)
                .bind::<Text, _>(changes.url.as_ref().unwrap_or(&old.url))
                .bind::<Text, _>(changes.description.as_ref().unwrap_or(&old.description))
                .bind::<Array<Text>, _>(changes.type_prefixes.as_ref().unwrap_or(&old.type_prefixes))
                .bind::<Nullable<Array<SqlUuid>>, _>(
                    changes.org_filter.as_ref().unwrap_or(&old.org_filter).as_deref(),
                )
                .bind::<Nullable<Text>, _>(disabled_reason)
                .bind::<diesel::sql_types::Bool, _>(restart)
                .get_result(conn)
                .await?;
                audit::record(
                    conn,
                    actor,
                    row.org_id,
                    Action::WebhookEndpointUpdate,
                    &row.name(),
                    audited(&row),
                )
                .await?;
                Ok(row)
            }
            .scope_boxed()
        })
        .await
    }

    /// Deletes an endpoint with its deliveries and queued redeliveries.
    pub async fn delete_webhook_endpoint(
        &self,
        actor: &Actor,
        owner: Owner<'_>,
        id: Uuid,
    ) -> Result<()> {
        self.change_endpoints(&owner, actor, |conn| {
            async move {
                let row = lock_endpoint(conn, &owner, id).await?;
                diesel::sql_query("DELETE FROM webhook_endpoints WHERE id = $1")
                    .bind::<SqlUuid, _>(id)
                    .execute(conn)
                    .await?;
                audit::record(
                    conn,
                    actor,
                    row.org_id,
                    Action::WebhookEndpointDelete,
                    &row.name(),
                    audited(&row),
                )
                .await
            }
            .scope_boxed()
        })
        .await
    }

    /// Queues the event `event_id` to be delivered to the endpoint again. It
    /// must be one the endpoint receives: of its organization (or among a
    /// service's), and of a type it subscribes to.
    pub async fn redeliver_webhook_event(
        &self,
        actor: &Actor,
        owner: Owner<'_>,
        id: Uuid,
        event_id: Uuid,
    ) -> Result<EndpointRow> {
        #[derive(diesel::QueryableByName)]
        struct Found {
            #[diesel(sql_type = Text)]
            type_: String,
            #[diesel(sql_type = Nullable<SqlUuid>)]
            org_id: Option<Uuid>,
        }
        self.change_endpoints(&owner, actor, |conn| {
            async move {
                let row = lock_endpoint(conn, &owner, id).await?;
                let found: Vec<Found> = diesel::sql_query(
                    "SELECT type AS type_, org_id FROM events WHERE id = $1",
                )
                .bind::<SqlUuid, _>(event_id)
                .load(conn)
                .await?;
                let receives = |event: &Found| match (row.org_id, &row.org_filter) {
                    (Some(org_id), _) => event.org_id == Some(org_id),
                    (None, Some(orgs)) => event.org_id.is_some_and(|org| orgs.contains(&org)),
                    (None, None) => true,
                };
                let event = found.into_iter().find(receives).ok_or_else(|| {
                    Error::NotFound(format!(
                        "event {event_id} not found among the events {} receives (events are kept for --event-retention)",
                        row.name()
                    ))
                })?;
                let subscribed = row.type_prefixes.is_empty()
                    || row.type_prefixes.iter().any(|p| event.type_.starts_with(p.as_str()));
                if !subscribed {
                    return Err(Error::precondition(
                        "NOT_SUBSCRIBED",
                        row.name(),
                        format!(
                            "event {event_id} is of type {}, which {} does not subscribe to (event_type_prefixes: {})",
                            quoted(&event.type_),
                            row.name(),
                            row.type_prefixes.join(", ")
                        ),
                    ));
                }
                diesel::sql_query(
                    "INSERT INTO webhook_redeliveries (endpoint_id, event_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                )
                .bind::<SqlUuid, _>(id)
                .bind::<SqlUuid, _>(event_id)
                .execute(conn)
                .await?;
                audit::record(
                    conn,
                    actor,
                    row.org_id,
                    Action::WebhookEndpointRedeliver,
                    &row.name(),
                    serde_json::json!({ "event_id": event_id.to_string(), "event_type": event.type_ }),
                )
                .await?;
                Ok(row)
            }
            .scope_boxed()
        })
        .await
    }
}
