//! Transactional outbox for email: messages are queued in the transaction of the
//! change that causes them, and delivered by `crate::workers` afterwards, with
//! retries, until each is delivered or given up on for good.

use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use uuid::Uuid;

use super::{Conn, KeepPrepared, Store, schema::outbox_messages};
use crate::error::Result;
use crate::mail::{Mailer, Outgoing, SendError};

/// What a delivered message's body is replaced with.
pub const REDACTED_BODY: &str = "(delivered; body removed)";
/// What the body of a message given up on is replaced with.
pub const REDACTED_FAILED_BODY: &str = "(not delivered; body removed)";

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

/// When a message that could not be sent is tried again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a message is given up on.
    pub max_attempts: i32,
    /// Wait after the first failure; it doubles after each further one.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl RetryPolicy {
    /// The wait after a message failed for the `attempts`-th time.
    fn backoff(&self, attempts: i32) -> Duration {
        let doublings = u32::try_from(attempts - 1).unwrap_or(0).min(31);
        self.base
            .checked_mul(1 << doublings)
            .map_or(self.max, |wait| wait.min(self.max))
    }
}

/// What one delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub sent: usize,
    /// Not sent this time, to be retried.
    pub deferred: usize,
    /// Given up on for good.
    pub failed: usize,
}

impl Delivery {
    /// Messages this round claimed.
    pub fn claimed(&self) -> usize {
        self.sent + self.deferred + self.failed
    }
}

#[derive(Debug, Queryable)]
struct Due {
    id: Uuid,
    recipient: String,
    subject: String,
    body: String,
    attempts: i32,
}

impl Store {
    /// Sends up to `limit` due messages through `mailer` and records each outcome,
    /// in one transaction that holds their row locks while they are sent: with
    /// `SKIP LOCKED`, replicas never claim the same message, and a crash before
    /// the commit leaves the messages due (sent at least once, never lost).
    pub async fn deliver_outbox(
        &self,
        mailer: &Mailer,
        retry: &RetryPolicy,
        limit: i64,
    ) -> Result<Delivery> {
        self.write(move |conn| {
            async move {
                let due: Vec<Due> = outbox_messages::table
                    .filter(outbox_messages::delivered_at.is_null())
                    .filter(outbox_messages::failed_at.is_null())
                    .filter(outbox_messages::next_attempt_at.le(diesel::dsl::now))
                    .order(outbox_messages::next_attempt_at)
                    .limit(limit)
                    .select((
                        outbox_messages::id,
                        outbox_messages::recipient,
                        outbox_messages::subject,
                        outbox_messages::body,
                        outbox_messages::attempts,
                    ))
                    .for_update()
                    .skip_locked()
                    .load(conn)
                    .await?;
                let mut round = Delivery::default();
                let mut unavailable: Option<String> = None;
                for message in &due {
                    let sent = match &unavailable {
                        // The server is down for all of them: waiting out its timeout once
                        // per message would only hold the row locks longer.
                        Some(err) => Err(SendError::Unavailable(err.clone())),
                        None => {
                            mailer
                                .send(Outgoing {
                                    id: message.id,
                                    to: &message.recipient,
                                    subject: &message.subject,
                                    body: &message.body,
                                })
                                .await
                        }
                    };
                    if let (None, Err(SendError::Unavailable(err))) = (&unavailable, &sent) {
                        tracing::warn!(error = %err, "the SMTP server is unavailable; due emails wait for a retry");
                        unavailable = Some(err.clone());
                    }
                    record(conn, message, sent, retry, &mut round).await?;
                }
                Ok(round)
            }
            .scope_boxed()
        })
        .await
    }
}

/// Records the outcome of one attempt to send `message`.
async fn record(
    conn: &mut Conn,
    message: &Due,
    sent: std::result::Result<(), SendError>,
    retry: &RetryPolicy,
    round: &mut Delivery,
) -> Result<()> {
    let row = outbox_messages::table.find(message.id);
    let error = match sent {
        Ok(()) => {
            round.sent += 1;
            diesel::update(row)
                .set((
                    outbox_messages::delivered_at.eq(diesel::dsl::now),
                    outbox_messages::attempts.eq(message.attempts.saturating_add(1)),
                    // Bodies may carry secrets (verification links): keep them no longer than needed.
                    outbox_messages::body.eq(REDACTED_BODY),
                ))
                .prepared()
                .execute(conn)
                .await?;
            return Ok(());
        }
        Err(error) => error,
    };
    // Only answers about this message count as attempts; an outage waits, however
    // long, and the message goes out once the server is back.
    let attempts = match error {
        SendError::Unavailable(_) => message.attempts,
        _ => message.attempts.saturating_add(1),
    };
    if matches!(error, SendError::Permanent(_)) || attempts >= retry.max_attempts {
        round.failed += 1;
        tracing::error!(id = %message.id, to = %message.recipient, attempts, %error, "email given up on");
        diesel::update(row)
            .set((
                outbox_messages::failed_at.eq(diesel::dsl::now),
                outbox_messages::attempts.eq(attempts),
                outbox_messages::last_error.eq(error.to_string()),
                outbox_messages::body.eq(REDACTED_FAILED_BODY),
            ))
            .prepared()
            .execute(conn)
            .await?;
    } else {
        round.deferred += 1;
        let next_attempt_at = Utc::now() + retry.backoff(attempts.max(1));
        if !matches!(error, SendError::Unavailable(_)) {
            tracing::warn!(id = %message.id, to = %message.recipient, attempts, %error, %next_attempt_at, "email not sent; will retry");
        }
        diesel::update(row)
            .set((
                outbox_messages::attempts.eq(attempts),
                outbox_messages::last_error.eq(error.to_string()),
                outbox_messages::next_attempt_at.eq(next_attempt_at),
            ))
            .prepared()
            .execute(conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RetryPolicy;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryPolicy {
            max_attempts: 100,
            base: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        };
        let waits: Vec<u64> = [1, 2, 3, 4, 7, 8, 40, 100]
            .map(|attempts| retry.backoff(attempts).as_secs())
            .into();
        assert_eq!(waits, [30, 60, 120, 240, 1920, 3600, 3600, 3600]);
    }
}
