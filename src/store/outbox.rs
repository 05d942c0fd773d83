//! Transactional outbox for email: messages are queued in the transaction of the
//! change that causes them, and delivered by `crate::workers` afterwards.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::{Conn, Store, schema::outbox_messages};
use crate::error::Result;

/// What a delivered message's body is replaced with.
pub const REDACTED_BODY: &str = "(delivered; body removed)";

pub async fn enqueue(conn: &mut Conn, recipient: &str, subject: &str, body: &str) -> Result<()> {
    diesel::insert_into(outbox_messages::table)
        .values((
            outbox_messages::id.eq(Uuid::now_v7()),
            outbox_messages::recipient.eq(recipient),
            outbox_messages::subject.eq(subject),
            outbox_messages::body.eq(body),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Queryable)]
pub struct Message {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

impl Store {
    /// Claims up to `limit` undelivered messages, hands each to `deliver`, and marks
    /// those it accepted as delivered. `SKIP LOCKED` lets replicas share the work.
    pub async fn deliver_outbox<F>(&self, limit: i64, deliver: F) -> Result<usize>
    where
        F: Fn(&Message) -> bool + Send + Sync,
    {
        let deliver = &deliver;
        self.write(move |conn| {
            async move {
                let batch: Vec<Message> = outbox_messages::table
                    .filter(outbox_messages::delivered_at.is_null())
                    .order(outbox_messages::created_at)
                    .limit(limit)
                    .select((
                        outbox_messages::id,
                        outbox_messages::recipient,
                        outbox_messages::subject,
                        outbox_messages::body,
                    ))
                    .for_update()
                    .skip_locked()
                    .load(conn)
                    .await?;
                let delivered: Vec<Uuid> =
                    batch.iter().filter(|m| deliver(m)).map(|m| m.id).collect();
                diesel::update(
                    outbox_messages::table.filter(outbox_messages::id.eq_any(&delivered)),
                )
                .set((
                    outbox_messages::delivered_at.eq(diesel::dsl::now),
                    // Bodies may carry secrets (verification links): keep them no longer than needed.
                    outbox_messages::body.eq(REDACTED_BODY),
                ))
                .execute(conn)
                .await?;
                Ok(delivered.len())
            }
            .scope_boxed()
        })
        .await
    }
}
