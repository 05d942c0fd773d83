//! Webhook delivery's state: which endpoints are due, claimed with a lease
//! (as the email outbox's messages: `FOR UPDATE SKIP LOCKED`, so replicas
//! never claim the same endpoint), the outcome of each attempt, and the list
//! of attempts.
//!
//! An endpoint's cursor moves only past events it acknowledged, and only
//! while the round that sent them holds its lease; a failure backs the
//! endpoint off as the retry schedule says, and disables it once the schedule
//! is used up. A round that stops without recording (orgd killed) leaves its
//! lease to run out: the endpoint is then due again and gets the unrecorded
//! event once more (at least once).

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Double, Integer, Jsonb, Nullable, Text, Timestamptz,
    Uuid as SqlUuid,
};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use tokio::time::Instant;
use uuid::Uuid;

use super::events::{Cursor, Event, EventFilter};
use super::webhooks::endpoint_name;
use super::{Actor, KeepPrepared, Store, audit};
use crate::domain::{Action, PageRequest, PageToken};
use crate::error::Result;

/// Endpoints claimed together, leased to one round.
pub struct Claim {
    pub lease_id: Uuid,
    /// When the round must stop sending, by this process's clock: measured
    /// from before the claim, a margin before the lease ends.
    pub deadline: Instant,
    pub endpoints: Vec<ClaimedEndpoint>,
}

/// What a round needs to deliver to one endpoint.
#[derive(diesel::QueryableByName)]
pub struct ClaimedEndpoint {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub org_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Array<SqlUuid>>)]
    org_filter: Option<Vec<Uuid>>,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Array<Text>)]
    type_prefixes: Vec<String>,
    #[diesel(sql_type = Bytea)]
    pub secret_sealed: Vec<u8>,
    #[diesel(sql_type = Text)]
    pub key_id: String,
    #[diesel(sql_type = BigInt)]
    cursor_txid: i64,
    #[diesel(sql_type = BigInt)]
    cursor_position: i64,
}

impl ClaimedEndpoint {
    pub fn name(&self) -> String {
        endpoint_name(self.id, self.org_id)
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            txid: self.cursor_txid,
            position: self.cursor_position,
        }
    }

    /// The events the endpoint receives.
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            org_ids: self.org_id.map(|id| vec![id]).or(self.org_filter.clone()),
            type_prefixes: self.type_prefixes.clone(),
        }
    }
}

/// One attempt, as sent.
pub struct Attempt<'a> {
    pub event: &'a Event,
    pub redelivery: bool,
    pub attempted_at: DateTime<Utc>,
    pub duration: Duration,
    pub http_status: Option<u16>,
    /// `None`: acknowledged.
    pub error: Option<String>,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Acknowledged: the endpoint moved past the event.
    Delivered,
    /// Failed; retried after the schedule's next wait.
    Deferred,
    /// Failed once more than the schedule has retries: the endpoint is off.
    Disabled,
    /// The lease had run out: the attempt is listed, the endpoint unchanged.
    LeaseLost,
}

/// Leases up to `$3` due endpoints to lease `$1` for `$2` seconds. Due:
/// enabled, not backing off, not leased, and with something to send (a
/// queued redelivery, or an event of its organization, or any for a service,
/// after its cursor; the read then filters further).
const CLAIM_DUE: &str = "\
    UPDATE webhook_endpoints SET lease_id = $1, leased_until = now() + make_interval(secs => $2) \
    WHERE id IN ( \
        SELECT w.id FROM webhook_endpoints w \
        WHERE w.disabled_at IS NULL AND w.retry_at <= now() \
          AND (w.leased_until IS NULL OR w.leased_until <= now()) \
          AND (EXISTS (SELECT 1 FROM webhook_redeliveries r JOIN events e ON e.id = r.event_id \
                       WHERE r.endpoint_id = w.id) \
               OR (w.org_id IS NULL AND EXISTS (SELECT 1 FROM events e \
                       WHERE (e.txid, e.position) > (w.cursor_txid, w.cursor_position))) \
               OR (w.org_id IS NOT NULL AND EXISTS (SELECT 1 FROM events e \
                       WHERE e.org_id = w.org_id \
                         AND (e.txid, e.position) > (w.cursor_txid, w.cursor_position)))) \
        ORDER BY w.retry_at \
        LIMIT $3 \
        FOR UPDATE SKIP LOCKED) \
    RETURNING id, org_id, org_filter, url, type_prefixes, secret_sealed, key_id, \
              cursor_txid::text::bigint AS cursor_txid, cursor_position";

/// Lists the attempt unless the endpoint is gone; its number counts the
/// attempts at the same event before it.
const INSERT_ATTEMPT: &str = "\
    INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, attempt, redelivery, \
        attempted_at, duration_ms, http_status, error) \
    SELECT $1, w.id, $3, $4, \
        (SELECT count(*) + 1 FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.event_id = $3), \
        $5, $6, $7, $8, $9 \
    FROM webhook_endpoints w WHERE w.id = $2";

#[derive(diesel::QueryableByName)]
struct EventRow {
    #[diesel(sql_type = BigInt)]
    txid: i64,
    #[diesel(sql_type = BigInt)]
    position: i64,
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    type_: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    org_id: Option<Uuid>,
    #[diesel(sql_type = Text)]
    subject: String,
    #[diesel(sql_type = Text)]
    actor: String,
    #[diesel(sql_type = Text)]
    request_id: String,
    #[diesel(sql_type = Jsonb)]
    data: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

impl From<EventRow> for Event {
    fn from(row: EventRow) -> Self {
        Event {
            cursor: Cursor {
                txid: row.txid,
                position: row.position,
            },
            id: row.id,
            event_type: row.type_,
            org_id: row.org_id,
            subject: row.subject,
            actor: row.actor,
            request_id: row.request_id,
            data: row.data,
            time: row.created_at,
        }
    }
}

/// One listed attempt.
#[derive(Debug, diesel::QueryableByName)]
pub struct DeliveryRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Bool)]
    pub redelivery: bool,
    #[diesel(sql_type = Timestamptz)]
    pub attempted_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub duration_ms: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    pub http_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
}

impl Store {
    /// Claims up to `limit` due endpoints for `lease`, in a statement of its own.
    pub async fn claim_webhook_endpoints(&self, limit: i64, lease: Duration) -> Result<Claim> {
        let leased = self.claim_leased(CLAIM_DUE, limit, lease).await?;
        Ok(Claim {
            lease_id: leased.lease_id,
            deadline: leased.deadline,
            endpoints: leased.rows,
        })
    }

    /// Whether any endpoint is enabled, on any replica: while none is, a new
    /// event gives delivery nothing to do.
    pub async fn any_webhook_endpoint_enabled(&self) -> Result<bool> {
        #[derive(diesel::QueryableByName)]
        struct Enabled {
            #[diesel(sql_type = Bool)]
            enabled: bool,
        }
        let row: Enabled = self
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(
                        "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE disabled_at IS NULL) AS enabled",
                    )
                    .prepared()
                    .get_result(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(row.enabled)
    }

    /// The oldest event queued for the endpoint by RedeliverEvent (one that
    /// retention deleted meanwhile is skipped: it cannot be sent).
    pub async fn next_redelivery(&self, endpoint_id: Uuid) -> Result<Option<Event>> {
        let rows: Vec<EventRow> = self
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(
                        "SELECT e.txid::text::bigint AS txid, e.position, e.id, e.type AS type_, e.org_id,
                                e.subject, e.actor, e.request_id, e.data, e.created_at
                         FROM webhook_redeliveries r JOIN events e ON e.id = r.event_id
                         WHERE r.endpoint_id = $1 ORDER BY r.requested_at, r.event_id LIMIT 1",
                    )
                    .bind::<SqlUuid, _>(endpoint_id)
                    .load(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(rows.into_iter().next().map(Event::from))
    }

    /// Records `attempt` at an event for `endpoint` of `claim`: the attempt
    /// itself always; the endpoint's progress (past the event, or backing off
    /// by `schedule`, or disabled) only while the lease holds.
    pub async fn record_webhook_attempt(
        &self,
        claim: &Claim,
        endpoint: &ClaimedEndpoint,
        attempt: &Attempt<'_>,
        schedule: &[Duration],
    ) -> Result<Recorded> {
        let waits: Vec<f64> = schedule.iter().map(Duration::as_secs_f64).collect();
        let waits = &waits;
        self.write(|conn| {
            async move {
                let event = attempt.event;
                diesel::sql_query(INSERT_ATTEMPT)
                    .bind::<SqlUuid, _>(Uuid::now_v7())
                    .bind::<SqlUuid, _>(endpoint.id)
                    .bind::<SqlUuid, _>(event.id)
                    .bind::<Text, _>(&event.event_type)
                    .bind::<Bool, _>(attempt.redelivery)
                    .bind::<Timestamptz, _>(attempt.attempted_at)
                    .bind::<Integer, _>(i32::try_from(attempt.duration.as_millis()).unwrap_or(i32::MAX))
                    .bind::<Nullable<Integer>, _>(attempt.http_status.map(i32::from))
                    .bind::<Nullable<Text>, _>(attempt.error.as_deref())
                    .execute(conn)
                    .await?;
                let Some(error) = &attempt.error else {
                    // Past a redelivered event: off the queue; past a feed
                    // event: the cursor moves on.
                    let updated = diesel::sql_query(
                        "WITH held AS (
                             UPDATE webhook_endpoints SET failures = 0,
                                 cursor_txid = CASE WHEN $3 THEN cursor_txid ELSE $4::text::xid8 END,
                                 cursor_position = CASE WHEN $3 THEN cursor_position ELSE $5 END
                             WHERE id = $1 AND lease_id = $2 RETURNING id),
                         done AS (
                             DELETE FROM webhook_redeliveries r USING held
                             WHERE $3 AND r.endpoint_id = held.id AND r.event_id = $6)
                         SELECT 1 FROM held",
                    )
                    .bind::<SqlUuid, _>(endpoint.id)
                    .bind::<SqlUuid, _>(claim.lease_id)
                    .bind::<Bool, _>(attempt.redelivery)
                    .bind::<BigInt, _>(event.cursor.txid)
                    .bind::<BigInt, _>(event.cursor.position)
                    .bind::<SqlUuid, _>(event.id)
                    .execute(conn)
                    .await?;
                    return Ok(if updated == 0 { Recorded::LeaseLost } else { Recorded::Delivered });
                };
                #[derive(diesel::QueryableByName)]
                struct Failures {
                    #[diesel(sql_type = Integer)]
                    failures: i32,
                    #[diesel(sql_type = Bool)]
                    disabled_now: bool,
                }
                // The n-th failure in a row waits the schedule's n-th wait;
                // one more than it has turns the endpoint off (unless someone
                // turned it off meanwhile).
                let failed: Vec<Failures> = diesel::sql_query(
                    "WITH old AS (
                         SELECT id, disabled_at FROM webhook_endpoints
                         WHERE id = $1 AND lease_id = $2 FOR UPDATE)
                     UPDATE webhook_endpoints w SET failures = w.failures + 1,
                         retry_at = now() + make_interval(secs => coalesce(($3::float8[])[w.failures + 1], 0)),
                         disabled_at = coalesce(w.disabled_at,
                             CASE WHEN w.failures + 1 > cardinality($3::float8[]) THEN now() END),
                         disabled_reason = coalesce(w.disabled_reason,
                             CASE WHEN w.failures + 1 > cardinality($3::float8[])
                             THEN format('%s attempts in a row failed; the last, at event %s: %s',
                                         w.failures + 1, $4::text, $5::text) END),
                         lease_id = NULL, leased_until = NULL
                     FROM old WHERE w.id = old.id
                     RETURNING w.failures, (old.disabled_at IS NULL AND w.disabled_at IS NOT NULL) AS disabled_now",
                )
                .bind::<SqlUuid, _>(endpoint.id)
                .bind::<SqlUuid, _>(claim.lease_id)
                .bind::<Array<Double>, _>(waits)
                .bind::<Text, _>(event.id.to_string())
                .bind::<Text, _>(error)
                .load(conn)
                .await?;
                let Some(failed) = failed.into_iter().next() else {
                    return Ok(Recorded::LeaseLost);
                };
                if !failed.disabled_now {
                    return Ok(Recorded::Deferred);
                }
                // A background change like any other: in the feed, by orgd.
                audit::record(
                    conn,
                    &Actor::system(format!("webhooks-{}", claim.lease_id)),
                    endpoint.org_id,
                    Action::WebhookEndpointDisable,
                    &endpoint.name(),
                    serde_json::json!({
                        "failed_attempts": failed.failures,
                        "event_id": event.id.to_string(),
                        "error": error,
                    }),
                )
                .await?;
                Ok(Recorded::Disabled)
            }
            .scope_boxed()
        })
        .await
    }

    /// Ends the lease on `endpoint`, with its cursor at `cursor` (where the
    /// round got to: past events it delivered or that its filter skips), and
    /// due again after `defer`.
    pub async fn release_webhook_endpoint(
        &self,
        claim: &Claim,
        endpoint: &ClaimedEndpoint,
        cursor: Cursor,
        defer: Duration,
    ) -> Result<()> {
        self.read(|conn| {
            async move {
                diesel::sql_query(
                    "UPDATE webhook_endpoints SET cursor_txid = $3::text::xid8, cursor_position = $4,
                         retry_at = greatest(retry_at, now() + make_interval(secs => $5)),
                         lease_id = NULL, leased_until = NULL
                     WHERE id = $1 AND lease_id = $2",
                )
                .bind::<SqlUuid, _>(endpoint.id)
                .bind::<SqlUuid, _>(claim.lease_id)
                .bind::<BigInt, _>(cursor.txid)
                .bind::<BigInt, _>(cursor.position)
                .bind::<Double, _>(defer.as_secs_f64())
                .execute(conn)
                .await?;
                Ok(())
            }
            .scope_boxed()
        })
        .await
    }

    /// A page of the attempts to deliver to endpoint `endpoint_id` (whose
    /// owner the caller checked), newest first.
    pub async fn list_webhook_deliveries(
        &self,
        endpoint_id: Uuid,
        page: PageRequest,
    ) -> Result<(Vec<DeliveryRow>, String)> {
        let (after_time, after_id) = match page.after {
            Some(after) => (Some(after.time), Some(after.id)),
            None => (None, None),
        };
        let rows: Vec<DeliveryRow> = self
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(
                        "SELECT id, event_id, event_type, attempt, redelivery, attempted_at, duration_ms,
                                http_status, error
                         FROM webhook_deliveries
                         WHERE endpoint_id = $1
                           AND ($2::timestamptz IS NULL OR (attempted_at, id) < ($2, $3))
                         ORDER BY attempted_at DESC, id DESC LIMIT $4",
                    )
                    .bind::<SqlUuid, _>(endpoint_id)
                    .bind::<Nullable<Timestamptz>, _>(after_time)
                    .bind::<Nullable<SqlUuid>, _>(after_id)
                    .bind::<BigInt, _>(page.limit + 1)
                    .load(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(page.finish(rows, |row: &DeliveryRow| PageToken {
            time: row.attempted_at,
            id: row.id,
        }))
    }

    /// Deletes up to `batch` attempts made before `before`, and redeliveries
    /// of events retention deleted; returns how many attempts went.
    pub async fn purge_webhook_deliveries(&self, before: DateTime<Utc>, batch: i64) -> Result<i64> {
        #[derive(diesel::QueryableByName)]
        struct Purged {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        let purged: Purged = self
            .write(|conn| {
                async move {
                    diesel::sql_query(
                        "DELETE FROM webhook_redeliveries r
                         WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id)",
                    )
                    .execute(conn)
                    .await?;
                    Ok(diesel::sql_query(
                        "WITH gone AS (
                             DELETE FROM webhook_deliveries WHERE id IN (
                                 SELECT id FROM webhook_deliveries WHERE attempted_at < $1
                                 ORDER BY attempted_at LIMIT $2)
                             RETURNING 1)
                         SELECT count(*) AS count FROM gone",
                    )
                    .bind::<Timestamptz, _>(before)
                    .bind::<BigInt, _>(batch)
                    .get_result(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(purged.count)
    }
}
