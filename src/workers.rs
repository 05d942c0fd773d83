//! Background work shared safely between replicas: purging organizations whose
//! restore window ended, deleting events past their retention, closing billing
//! periods, delivering the email outbox and webhooks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::mail::Mailer;
use crate::store::events::EventWakeups;
use crate::store::outbox::RetryPolicy;
use crate::store::{Actor, Store};
use crate::webhooks::delivery::Deliverer;

/// Runs `tick` every `interval`, the first time one interval after start, until
/// `stop` changes (it only ever turns true). Not at once: start-up has just done
/// the work itself (health), or it can wait a round while calls start (with a
/// long interval, as in the tests, queued emails stay readable).
pub fn every<F, Fut>(
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    mut tick: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => tick().await,
                _ = stop.changed() => return,
            }
        }
    })
}

/// Runs `round` every `interval` (as `every` does), logging how many things
/// it did, when any (`logged.0`), or that it failed (`logged.1`: what it was
/// doing); a failed round is simply run again next time.
fn counted_rounds<F, Fut>(
    store: Store,
    interval: Duration,
    stop: watch::Receiver<bool>,
    logged: (&'static str, &'static str),
    round: F,
) -> JoinHandle<()>
where
    F: Fn(Store) -> Fut + Send + 'static,
    Fut: Future<Output = crate::error::Result<usize>> + Send,
{
    let (done, doing) = logged;
    every(interval, stop, move || {
        let round = round(store.clone());
        async move {
            match round.await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "{done}"),
                Err(err) => tracing::warn!(error = %err, "{doing} failed; will retry"),
            }
        }
    })
}

/// Hard-deletes organizations whose `purge_time` has passed.
pub fn spawn_purger(
    store: Store,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    every(interval, stop, move || {
        let store = store.clone();
        async move {
            let actor = Actor::system(format!("purge-{}", uuid::Uuid::now_v7()));
            match store.purge_expired_orgs(&actor).await {
                Ok(purged) if !purged.is_empty() => tracing::info!(
                    count = purged.len(),
                    ?purged,
                    "purged deleted organizations"
                ),
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "purging deleted organizations failed; will retry")
                }
            }
        }
    })
}

/// Invitation and token expiries one round records at most (each kind).
const EXPIRY_BATCH: i64 = 500;

/// Records the expiries of invitations and API tokens in the change feed.
pub fn spawn_expiries(
    store: Store,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    counted_rounds(
        store,
        interval,
        stop,
        (
            "recorded expired invitations and API tokens",
            "recording expiries",
        ),
        |store| async move {
            let actor = Actor::system(format!("expiry-{}", uuid::Uuid::now_v7()));
            store.record_expiries(&actor, EXPIRY_BATCH).await
        },
    )
}

/// Events, and webhook attempts, one retention round deletes at most (each),
/// so that a long backlog is deleted over several rounds rather than in one
/// long transaction.
const RETENTION_BATCH: i64 = 10_000;

/// Deletes the change feed's events, and the webhook delivery attempts, older
/// than `retention`.
pub fn spawn_event_retention(
    store: Store,
    retention: Duration,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    counted_rounds(
        store,
        interval,
        stop,
        (
            "deleted events and webhook attempts past their retention",
            "deleting old events and webhook attempts",
        ),
        move |store| async move {
            // (A retention longer than the calendar deletes nothing.)
            let Some(before) = chrono::Utc::now().checked_sub_signed(retention) else {
                return Ok(0);
            };
            let events = store.purge_events(before, RETENTION_BATCH).await?;
            let attempts = store
                .purge_webhook_deliveries(before, RETENTION_BATCH)
                .await?;
            Ok((events + attempts) as usize)
        },
    )
}

/// Messages one delivery round claims. Small, because they must all be sent
/// within the round's lease; a tick runs more rounds while messages keep going
/// out.
const OUTBOX_BATCH: i64 = 20;
/// Bounds a tick, so that shutdown (checked between ticks) is not held up.
const OUTBOX_ROUNDS_PER_TICK: usize = 10;

/// Closes the billing periods that have ended and invoices them. Replicas may run
/// it at once: closing a period is idempotent.
pub fn spawn_billing(
    store: Store,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    counted_rounds(
        store,
        interval,
        stop,
        ("closed billing periods", "closing billing periods"),
        |store| async move {
            let actor = Actor::system(format!("billing-{}", uuid::Uuid::now_v7()));
            store.close_due_periods(&actor, 100).await
        },
    )
}

/// Delivers queued email through `mailer`, retrying failures as `retry` says;
/// each round holds what it claimed for `lease`.
pub fn spawn_outbox(
    store: Store,
    mailer: Mailer,
    retry: RetryPolicy,
    lease: Duration,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mailer = Arc::new(mailer);
    every(interval, stop, move || {
        let (store, mailer) = (store.clone(), mailer.clone());
        async move {
            for _ in 0..OUTBOX_ROUNDS_PER_TICK {
                match store
                    .deliver_outbox(&mailer, &retry, lease, OUTBOX_BATCH)
                    .await
                {
                    // A full round that sent something: more may be due right now.
                    Ok(round) if round.claimed() as i64 == OUTBOX_BATCH && round.sent > 0 => {}
                    Ok(_) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, "delivering the outbox failed; will retry");
                        return;
                    }
                }
            }
        }
    })
}

/// Delivers webhooks: a round whenever an event commits (`wakeups`), and at
/// least every `poll` for retries that came due and leases that ran out;
/// rounds follow each other while they deliver something.
///
/// While no endpoint is enabled (most deployments, most of the time) a commit
/// wakes nothing: a round per commit would cost a query per write. Whether one
/// is enabled is looked up at each poll, so an endpoint created on any replica
/// gets its first delivery within `poll`.
pub fn spawn_webhooks(
    deliverer: Deliverer,
    wakeups: EventWakeups,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wake = wakeups.subscribe();
        // A timer of its own, not a sleep started anew after each wake-up, so
        // that a steady stream of commits does not keep postponing the poll.
        let mut polls = tokio::time::interval(poll);
        polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut endpoints_enabled = true;
        loop {
            let more = endpoints_enabled
                && match deliverer.round().await {
                    Ok(more) => more,
                    Err(err) => {
                        tracing::warn!(error = %err, "delivering webhooks failed; will retry");
                        false
                    }
                };
            if *stop.borrow() {
                return;
            }
            if more {
                continue;
            }
            tokio::select! {
                // Stopping first: the listener ends at the same moment.
                biased;
                _ = stop.changed() => return,
                woken = wake.changed() => {
                    // The listener stopped without orgd stopping: poll meanwhile.
                    if woken.is_err() {
                        tokio::select! {
                            _ = stop.changed() => return,
                            _ = polls.tick() => {}
                        }
                        endpoints_enabled = any_endpoint_enabled(&deliverer).await;
                    }
                }
                _ = polls.tick() => {
                    endpoints_enabled = any_endpoint_enabled(&deliverer).await;
                }
            }
        }
    })
}

/// Whether delivery has an endpoint to serve; `true` when it cannot tell, so
/// that a failing lookup never stops delivery.
async fn any_endpoint_enabled(deliverer: &Deliverer) -> bool {
    deliverer
        .store
        .any_webhook_endpoint_enabled()
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "looking for enabled webhook endpoints failed; delivering anyway");
            true
        })
}
