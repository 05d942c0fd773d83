//! The change feed: the events `audit::record` writes beside every activity
//! row, read in feed order from a cursor (ListEvents, WatchEvents, webhooks),
//! and deleted after the retention period.
//!
//! An event's place is its `Cursor`: the id of the transaction that wrote it,
//! then its position among that transaction's events. A read hands out only
//! events of transactions below the xmin of its own snapshot, which have all
//! ended: a transaction still running, or still to start, has an id at or
//! above it. So nothing can appear later before a cursor already handed out,
//! and a reader that resumes from its cursor misses nothing (the migration
//! says why a plain sequence would not do). An event waits, at most, for the
//! transactions older than its own to end.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use scoped_futures::ScopedFutureExt;
use tokio::sync::watch;
use uuid::Uuid;

use super::{DbConfig, Prepared, Store};
use crate::domain::{Action, mask_card_numbers};
use crate::error::{Error, Result};

/// The CloudEvents `source` of orgd's events.
pub const EVENT_SOURCE: &str = "orgd";

/// A place in the feed: after the events of transactions below `txid`, and
/// after those of `txid` itself up to `position`. Written as 32 hex digits,
/// which sort as the feed does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub txid: i64,
    pub position: i64,
}

impl Cursor {
    /// Before every event: the feed from its oldest retained event.
    pub const START: Cursor = Cursor {
        txid: 0,
        position: 0,
    };

    /// Parses a cursor as `Display` writes it; `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Cursor> {
        let invalid = || {
            Error::invalid(
                field,
                format!(
                    "{} is not a cursor of orgd's change feed: pass one an event or a checkpoint gave you, or leave it empty",
                    crate::domain::quoted(text)
                ),
            )
        };
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let half = |range: std::ops::Range<usize>| {
            u64::from_str_radix(&text[range], 16)
                .ok()
                .and_then(|n| i64::try_from(n).ok())
        };
        match (half(0..16), half(16..32)) {
            (Some(txid), Some(position)) => Ok(Cursor { txid, position }),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.txid, self.position)
    }
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only these organizations' events; `None`: every organization's, and
    /// those of no organization (users' accounts).
    pub org_ids: Option<Vec<Uuid>>,
    /// Only events whose type starts with one of these; empty: every type.
    pub type_prefixes: Vec<String>,
}

impl EventFilter {
    /// Checks that each prefix starts at least one event type orgd writes, so
    /// that a misspelt filter is refused rather than silently matching nothing.
    pub fn check_type_prefixes(field: &str, prefixes: &[String]) -> Result<()> {
        let types = || Action::ALL.iter().map(|action| action.event_type());
        for prefix in prefixes {
            if !prefix.is_empty() && types().any(|known| known.starts_with(prefix.as_str())) {
                continue;
            }
            let closest = types()
                .map(|known| (strsim::levenshtein(prefix, known), known))
                .min()
                .filter(|(distance, _)| distance * 3 <= prefix.chars().count().max(3))
                .map(|(_, known)| format!(" did you mean '{known}'?"))
                .unwrap_or_default();
            // The resources, not all the types: the reply stays short.
            let mut resources: Vec<&str> = types()
                .filter_map(|known| known.rsplitn(3, '.').nth(2))
                .collect();
            resources.dedup();
            return Err(Error::invalid(
                field,
                format!(
                    "{} starts no event type orgd writes:{closest} Types are orgd.<resource>.<what happened>.v1 (e.g. orgd.member.removed.v1), for the resources {}",
                    crate::domain::quoted(prefix),
                    resources.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn type_patterns(&self) -> Vec<String> {
        self.type_prefixes
            .iter()
            .map(|prefix| {
                let escaped = prefix
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                format!("{escaped}%")
            })
            .collect()
    }
}

/// One event of the feed.
#[derive(Debug, Clone)]
pub struct Event {
    pub cursor: Cursor,
    pub id: Uuid,
    /// E.g. `orgd.member.removed.v1`.
    pub event_type: String,
    pub org_id: Option<Uuid>,
    /// The resource the change is about, e.g. `organizations/{id}/members/{id}`.
    pub subject: String,
    /// `users/{id}`, `services/{subject}` or `system`.
    pub actor: String,
    pub request_id: String,
    /// What changed: the activity row's details.
    pub data: serde_json::Value,
    pub time: DateTime<Utc>,
}

/// What one read returned.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where to read on from: after the last event, or, when the read found
    /// fewer than it asked for, past every event that can still appear before
    /// now (a checkpoint), so that a filtered reader moves on too.
    pub next: Cursor,
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    horizon: i64,
    #[diesel(sql_type = BigInt)]
    purged_txid: i64,
    #[diesel(sql_type = BigInt)]
    purged_position: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    txid: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    position: Option<i64>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    type_: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    org_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    subject: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    actor: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    request_id: Option<String>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    data: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    created_at: Option<DateTime<Utc>>,
}

impl Row {
    fn event(self) -> Option<Event> {
        Some(Event {
            cursor: Cursor {
                txid: self.txid?,
                position: self.position?,
            },
            id: self.id?,
            event_type: self.type_?,
            org_id: self.org_id,
            subject: self.subject?,
            actor: self.actor?,
            request_id: self.request_id?,
            data: self.data?,
            time: self.created_at?,
        })
    }
}

/// The read's statement: one of four fixed texts (with or without each
/// filter), so each is prepared once and planned for what it filters by.
fn read_statement(by_org: bool, by_type: bool) -> String {
    let mut conditions = String::new();
    let mut next_parameter = 4;
    if by_org {
        conditions.push_str(&format!(" AND e.org_id = ANY(${next_parameter})"));
        next_parameter += 1;
    }
    if by_type {
        conditions.push_str(&format!(" AND e.type LIKE ANY(${next_parameter})"));
    }
    // The horizon, the retention mark and the page come from one statement,
    // so from one snapshot; LEFT JOIN: the first two even when no event is due.
    format!(
        "SELECT h.horizon, r.purged_txid::text::bigint AS purged_txid, r.purged_position,
                p.txid, p.position, p.id, p.type AS type_, p.org_id, p.subject, p.actor,
                p.request_id, p.data, p.created_at
         FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
                      pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) h
         CROSS JOIN event_retention r
         LEFT JOIN LATERAL (
             SELECT e.txid::text::bigint AS txid, e.position, e.id, e.type, e.org_id, e.subject,
                    e.actor, e.request_id, e.data, e.created_at
             FROM events e
             WHERE (e.txid, e.position) > ($1::text::xid8, $2) AND e.txid < h.xmin{conditions}
             ORDER BY e.txid, e.position
             LIMIT $3
         ) p ON true
         ORDER BY p.txid, p.position"
    )
}

impl Store {
    /// Up to `limit` events after `after` that `filter` admits, in feed order.
    /// A cursor before what retention has kept is OUT_OF_RANGE, naming the
    /// oldest cursor that can be read from.
    pub async fn read_events(
        &self,
        after: Cursor,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<EventPage> {
        let statement = read_statement(filter.org_ids.is_some(), !filter.type_prefixes.is_empty());
        let org_ids = filter.org_ids.clone();
        let patterns = filter.type_patterns();
        let rows: Vec<Row> = self
            .read(|conn| {
                async move {
                    let mut query = diesel::sql_query(statement)
                        .into_boxed()
                        .bind::<BigInt, _>(after.txid)
                        .bind::<BigInt, _>(after.position)
                        .bind::<BigInt, _>(limit);
                    if let Some(org_ids) = org_ids {
                        query = query.bind::<Array<SqlUuid>, _>(org_ids);
                    }
                    if !patterns.is_empty() {
                        query = query.bind::<Array<Text>, _>(patterns);
                    }
                    Ok(Prepared(query).load(conn).await?)
                }
                .scope_boxed()
            })
            .await?;
        let first = rows
            .as_slice()
            .first()
            .expect("the horizon row is always there");
        let (horizon, purged) = (
            first.horizon,
            Cursor {
                txid: first.purged_txid,
                position: first.purged_position,
            },
        );
        if after != Cursor::START && after < purged {
            return Err(Error::CursorExpired {
                oldest: purged.to_string(),
                message: format!(
                    "cursor {} is older than the events orgd keeps (--event-retention); the oldest cursor to read from is {purged}",
                    mask_card_numbers(&after.to_string())
                ),
            });
        }
        let events: Vec<Event> = rows.into_iter().filter_map(Row::event).collect();
        let full = events.len() as i64 >= limit;
        let last = events.last().map_or(after, |event| event.cursor);
        let next = if full {
            last
        } else {
            // Everything below the horizon has been read: resume there.
            last.max(Cursor {
                txid: horizon,
                position: 0,
            })
            .max(purged)
        };
        Ok(EventPage { events, next })
    }

    /// The cursor of "now": after every event that can no longer appear
    /// before it. A watch from here sees what commits from now on.
    pub async fn current_cursor(&self) -> Result<Cursor> {
        #[derive(diesel::QueryableByName)]
        struct Horizon {
            #[diesel(sql_type = BigInt)]
            horizon: i64,
        }
        let horizon: Horizon = self
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon",
                    )
                    .get_result(conn)
                    .await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(Cursor {
            txid: horizon.horizon,
            position: 0,
        })
    }

    /// Deletes up to `batch` events older than `before`, moving the retention
    /// mark past them; returns how many went.
    pub async fn purge_events(&self, before: DateTime<Utc>, batch: i64) -> Result<i64> {
        #[derive(diesel::QueryableByName)]
        struct Purged {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        let purged: Purged = self
            .write(|conn| {
                async move {
                    Ok(diesel::sql_query(
                        "WITH gone AS (
                             DELETE FROM events WHERE (txid, position) IN (
                                 SELECT txid, position FROM events WHERE created_at < $1
                                 ORDER BY created_at LIMIT $2)
                             RETURNING txid, position),
                         last AS (SELECT txid, position FROM gone
                                  ORDER BY txid DESC, position DESC LIMIT 1),
                         marked AS (
                             UPDATE event_retention r
                             SET purged_txid = last.txid, purged_position = last.position
                             FROM last WHERE (last.txid, last.position) > (r.purged_txid, r.purged_position))
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

/// Wakes the readers waiting for new events (WatchEvents, webhook delivery)
/// when a writer commits one: a count that one LISTEN connection per process
/// bumps on each notification. A hint only: readers also look again on their
/// own, so a lost notification delays an event by that interval at most.
#[derive(Clone)]
pub struct EventWakeups {
    count: watch::Receiver<u64>,
}

impl EventWakeups {
    /// Listens on a connection of its own until `stop` turns true, connecting
    /// again (after a pause) whenever the connection fails.
    pub fn spawn(db: DbConfig, mut stop: watch::Receiver<bool>) -> Self {
        let (sender, count) = watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    reason = listen(&db, &sender) => {
                        tracing::warn!(%reason, "listening for new events stopped; will reconnect");
                    }
                    _ = stop.changed() => return,
                }
                // Events may have come meanwhile: wake everyone once.
                sender.send_modify(|n| *n += 1);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        EventWakeups { count }
    }

    /// A receiver that changes on every wake-up from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut receiver = self.count.clone();
        receiver.mark_unchanged();
        receiver
    }
}

/// Listens until the connection fails; returns why.
async fn listen(db: &DbConfig, sender: &watch::Sender<u64>) -> String {
    let mut conn = match db.establish().await {
        Ok(conn) => conn,
        Err(err) => return err.to_string(),
    };
    if let Err(err) = diesel::sql_query("LISTEN orgd_events")
        .execute(&mut conn)
        .await
    {
        return err.to_string();
    }
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    loop {
        match notifications.next().await {
            Some(Ok(_)) => sender.send_modify(|n| *n += 1),
            Some(Err(err)) => return err.to_string(),
            None => return "the connection closed".into(),
        }
    }
}
