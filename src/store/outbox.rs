//! Transactional outbox for email: messages are queued in the transaction of the
//! change that causes them, and delivered by `crate::workers` afterwards, with
//! retries, until each is delivered or given up on for good.
//!
//! A delivery round never talks to the SMTP server inside a transaction or while
//! it holds a database connection. It
//! 1. claims due messages in one statement (`FOR UPDATE SKIP LOCKED`, so rounds
//!    of several replicas never claim the same message), leasing them to itself
//!    for `lease` under a fresh lease id, and commits;
//! 2. sends each one, with no connection checked out;
//! 3. records each outcome right after its send, in a statement of its own that
//!    changes the message only while the round still holds its lease, and ends
//!    the lease.
//!
//! Delivery is at least once. A message is sent again only when the round that
//! sent it did not record that before its lease ran out: orgd stopped, the
//! database failed (the round then stops, so at most the message just sent is
//! left unrecorded), or the send itself outlasted the lease. Such a message
//! becomes due when its lease ends and goes out once more, with the same
//! `Message-ID` (derived from the outbox id), so receivers can drop the copy.
//! Messages claimed but not yet sent when a round stops wait for their lease to
//! end too, and are then sent once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use tokio::time::Instant;
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
    /// Outcomes not recorded: the lease had run out and another round had
    /// claimed the message again.
    pub lost: usize,
}

impl Delivery {
    /// Messages this round claimed.
    pub fn claimed(&self) -> usize {
        self.sent + self.deferred + self.failed + self.lost
    }

    fn count(&mut self, recorded: Recorded) {
        match recorded {
            Recorded::Sent => self.sent += 1,
            Recorded::Deferred => self.deferred += 1,
            Recorded::Failed => self.failed += 1,
            Recorded::LeaseLost => self.lost += 1,
        }
    }
}

/// What recording the outcome of one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Sent,
    /// To be retried.
    Deferred,
    /// Given up on for good.
    Failed,
    /// Nothing: the lease had run out and another round had claimed the message
    /// again, so the outcome is that round's to record.
    LeaseLost,
}

/// Messages one delivery round claimed, leased to it.
#[derive(Debug)]
pub struct Claim {
    /// Only a record that names it changes the claimed messages.
    pub lease_id: Uuid,
    pub lease: Duration,
    /// When the lease ends by this process's clock: measured from before the
    /// claim was sent, so never after the database's end of it.
    deadline: Instant,
    pub messages: Vec<Claimed>,
}

/// One claimed message.
#[derive(Debug, QueryableByName)]
#[diesel(table_name = outbox_messages)]
pub struct Claimed {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i32,
}

/// Leases up to `$3` due messages to lease `$1` for `$2` seconds. A message is
/// due once its next attempt is and no lease holds it (the expression of the
/// partial index `outbox_messages_due`; GREATEST ignores a NULL lease).
const CLAIM_DUE: &str = "\
    UPDATE outbox_messages SET lease_id = $1, leased_until = now() + make_interval(secs => $2) \
    WHERE id IN ( \
        SELECT id FROM outbox_messages \
        WHERE delivered_at IS NULL AND failed_at IS NULL \
          AND GREATEST(next_attempt_at, leased_until) <= now() \
        ORDER BY GREATEST(next_attempt_at, leased_until) \
        LIMIT $3 \
        FOR UPDATE SKIP LOCKED) \
    RETURNING id, recipient, subject, body, attempts";

impl Claim {
    /// Sends `message` through `mailer`. The send is cut off when the lease
    /// ends, since another round may then claim and send the message too; a
    /// server that slow counts as unavailable.
    pub async fn send(
        &self,
        mailer: &Mailer,
        message: &Claimed,
    ) -> std::result::Result<(), SendError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let outgoing = Outgoing {
            id: message.id,
            to: &message.recipient,
            subject: &message.subject,
            body: &message.body,
        };
        tokio::time::timeout(left, mailer.send(outgoing))
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Unavailable(format!(
                    "the SMTP server did not take the message within the outbox lease ({:?})",
                    self.lease
                )))
            })
    }
}

impl Store {
    /// Claims up to `limit` due messages for `lease`, in a statement of its own.
    pub async fn claim_outbox(&self, limit: i64, lease: Duration) -> Result<Claim> {
        let leased = self.claim_leased(CLAIM_DUE, limit, lease).await?;
        Ok(Claim {
            lease_id: leased.lease_id,
            lease,
            deadline: leased.deadline,
            messages: leased.rows,
        })
    }

    /// Records the outcome of one attempt to send `message` of `claim`, in a
    /// statement of its own, and ends its lease; changes nothing when the lease
    /// was lost.
    pub async fn record_outcome(
        &self,
        claim: &Claim,
        message: &Claimed,
        sent: std::result::Result<(), SendError>,
        retry: &RetryPolicy,
    ) -> Result<Recorded> {
        self.read(|conn| record(conn, claim, message, sent, retry).scope_boxed())
            .await
    }

    /// One delivery round: claims up to `limit` due messages for `lease`, sends
    /// them through `mailer` and records each outcome (see the module docs).
    pub async fn deliver_outbox(
        &self,
        mailer: &Mailer,
        retry: &RetryPolicy,
        lease: Duration,
        limit: i64,
    ) -> Result<Delivery> {
        let claim = self.claim_outbox(limit, lease).await?;
        let mut round = Delivery::default();
        let mut unavailable: Option<String> = None;
        for message in &claim.messages {
            let sent = match &unavailable {
                // The server is down for all of them: waiting out its timeout once
                // per message would only delay the round. Recording the outage
                // ends their leases without using up an attempt.
                Some(err) => Err(SendError::Unavailable(err.clone())),
                None => claim.send(mailer, message).await,
            };
            if let (None, Err(SendError::Unavailable(err))) = (&unavailable, &sent) {
                tracing::warn!(error = %err, "the SMTP server is unavailable; due emails wait for a retry");
                unavailable = Some(err.clone());
            }
            // On an error the round stops: messages sent from now on could not be
            // recorded either, and would all be sent again.
            round.count(self.record_outcome(&claim, message, sent, retry).await?);
        }
        Ok(round)
    }
}

/// `outcome`, if the update of `message` changed its row (`updated`), which it
/// does only while the lease holds.
fn recorded(updated: usize, message: &Claimed, outcome: Recorded) -> Recorded {
    if updated == 0 {
        tracing::warn!(id = %message.id, to = %message.recipient, ?outcome, "email outcome not recorded: its lease ran out and another round claimed it");
        return Recorded::LeaseLost;
    }
    outcome
}

/// `Store::record_outcome` on `conn`.
async fn record(
    conn: &mut Conn,
    claim: &Claim,
    message: &Claimed,
    sent: std::result::Result<(), SendError>,
    retry: &RetryPolicy,
) -> Result<Recorded> {
    let row = outbox_messages::table
        .filter(outbox_messages::id.eq(message.id))
        .filter(outbox_messages::lease_id.eq(claim.lease_id));
    let release = (
        outbox_messages::lease_id.eq(None::<Uuid>),
        outbox_messages::leased_until.eq(None::<DateTime<Utc>>),
    );
    let error = match sent {
        Ok(()) => {
            let updated = diesel::update(row)
                .set((
                    outbox_messages::delivered_at.eq(diesel::dsl::now),
                    outbox_messages::attempts.eq(message.attempts.saturating_add(1)),
                    // Bodies may carry secrets (verification links): keep them no longer than needed.
                    outbox_messages::body.eq(REDACTED_BODY),
                    release,
                ))
                .prepared()
                .execute(conn)
                .await?;
            return Ok(recorded(updated, message, Recorded::Sent));
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
        let updated = diesel::update(row)
            .set((
                outbox_messages::failed_at.eq(diesel::dsl::now),
                outbox_messages::attempts.eq(attempts),
                outbox_messages::last_error.eq(error.to_string()),
                outbox_messages::body.eq(REDACTED_FAILED_BODY),
                release,
            ))
            .prepared()
            .execute(conn)
            .await?;
        let outcome = recorded(updated, message, Recorded::Failed);
        if outcome == Recorded::Failed {
            tracing::error!(id = %message.id, to = %message.recipient, attempts, %error, "email given up on");
        }
        Ok(outcome)
    } else {
        let next_attempt_at = Utc::now() + retry.backoff(attempts.max(1));
        let updated = diesel::update(row)
            .set((
                outbox_messages::attempts.eq(attempts),
                outbox_messages::last_error.eq(error.to_string()),
                outbox_messages::next_attempt_at.eq(next_attempt_at),
                release,
            ))
            .prepared()
            .execute(conn)
            .await?;
        let outcome = recorded(updated, message, Recorded::Deferred);
        if outcome == Recorded::Deferred && !matches!(error, SendError::Unavailable(_)) {
            tracing::warn!(id = %message.id, to = %message.recipient, attempts, %error, %next_attempt_at, "email not sent; will retry");
        }
        Ok(outcome)
    }
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
