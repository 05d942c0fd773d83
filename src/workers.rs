//! Background work shared safely between replicas: purging organizations whose
//! restore window ended, and delivering the email outbox.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{Actor, Store};

/// Runs `tick` every `interval` until `stop` changes (it only ever turns true).
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
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => tick().await,
                _ = stop.changed() => return,
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

/// Delivers queued email. No SMTP transport exists yet, so delivery is a log line
/// an operator can act on — which is why start-up warns that links land in the log.
pub fn spawn_outbox(
    store: Store,
    interval: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    every(interval, stop, move || {
        let store = store.clone();
        async move {
            let delivered = store
                .deliver_outbox(100, |message| {
                    tracing::info!(id = %message.id, to = %message.recipient, subject = %message.subject, body = %message.body, "email (no SMTP configured)");
                    true
                })
                .await;
            if let Err(err) = delivered {
                tracing::warn!(error = %err, "delivering the outbox failed; will retry");
            }
        }
    })
}
