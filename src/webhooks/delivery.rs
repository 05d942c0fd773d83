//! One delivery round: claim the due endpoints, send each its queued
//! redeliveries and then the next events of its feed, in order, one at a time,
//! and record every attempt (`store::webhook_delivery` says what a record
//! does). Endpoints are served side by side; one slow endpoint delays only
//! itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::sealing::Keyring;
use super::sender::Sender;
use super::signing::SigningKey;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::events::{Cursor, Event};
use crate::store::webhook_delivery::{Attempt, Claim, ClaimedEndpoint, Recorded};

/// Endpoints one round claims.
const ENDPOINTS_PER_ROUND: i64 = 16;
/// Events of its feed an endpoint is sent per round at most.
const EVENTS_PER_ROUND: i64 = 100;

/// Everything a round needs.
pub struct Deliverer {
    pub store: Store,
    pub sender: Sender,
    pub keyring: Arc<Keyring>,
    /// The waits before each retry.
    pub schedule: Vec<Duration>,
    pub lease: Duration,
}

/// Where one endpoint's round stopped.
enum Stopped {
    /// Sent all it had (`true` if it sent anything), or ran out of lease time.
    Done(bool),
    /// An attempt failed, or the lease was lost: nothing more this round.
    Halted,
}

impl Deliverer {
    /// One round; returns whether it delivered anything (so more may be due).
    pub async fn round(&self) -> Result<bool> {
        let claim = self
            .store
            .claim_webhook_endpoints(ENDPOINTS_PER_ROUND, self.lease)
            .await?;
        let rounds = claim
            .endpoints
            .iter()
            .map(|endpoint| self.serve(&claim, endpoint));
        let mut delivered = false;
        for outcome in futures_util::future::join_all(rounds).await {
            match outcome {
                Ok(Stopped::Done(sent)) => delivered |= sent,
                Ok(Stopped::Halted) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "webhook delivery failed; the endpoint is tried again when its lease ends")
                }
            }
        }
        Ok(delivered)
    }

    /// Delivers what `endpoint` is due, until an attempt fails or time is up.
    async fn serve(&self, claim: &Claim, endpoint: &ClaimedEndpoint) -> Result<Stopped> {
        let key = match self.signing_key(endpoint) {
            Ok(key) => key,
            Err(err) => {
                // An operator must fix the key file; try again a lease later.
                tracing::error!(endpoint = %endpoint.name(), error = %err, "cannot sign webhooks");
                self.store
                    .release_webhook_endpoint(claim, endpoint, endpoint.cursor(), self.lease)
                    .await?;
                return Ok(Stopped::Halted);
            }
        };
        let mut sent = false;
        while let Some(event) = self.store.next_redelivery(endpoint.id).await? {
            if !self.attempt(claim, endpoint, &key, &event, true).await? {
                return Ok(Stopped::Halted);
            }
            sent = true;
        }
        let mut cursor = endpoint.cursor();
        let page = match self
            .store
            .read_events(cursor, &endpoint.filter(), EVENTS_PER_ROUND)
            .await
        {
            Ok(page) => page,
            Err(Error::CursorExpired { oldest, .. }) => {
                // Disabled longer than events are kept: what was lost is lost;
                // deliver from the oldest event there is.
                let oldest = Cursor::parse("oldest", &oldest)?;
                tracing::warn!(endpoint = %endpoint.name(), from = %cursor, to = %oldest, "events this webhook endpoint had not received were deleted by retention; delivery goes on from the oldest kept");
                self.store
                    .release_webhook_endpoint(claim, endpoint, oldest, Duration::ZERO)
                    .await?;
                return Ok(Stopped::Done(sent));
            }
            Err(err) => return Err(err),
        };
        for event in &page.events {
            if Instant::now() >= claim.deadline {
                self.store
                    .release_webhook_endpoint(claim, endpoint, cursor, Duration::ZERO)
                    .await?;
                return Ok(Stopped::Done(sent));
            }
            if !self.attempt(claim, endpoint, &key, event, false).await? {
                return Ok(Stopped::Halted);
            }
            cursor = event.cursor;
            sent = true;
        }
        self.store
            .release_webhook_endpoint(claim, endpoint, page.next, Duration::ZERO)
            .await?;
        Ok(Stopped::Done(sent))
    }

    fn signing_key(&self, endpoint: &ClaimedEndpoint) -> Result<SigningKey> {
        self.keyring
            .key()?
            .open(endpoint.id, &endpoint.key_id, &endpoint.secret_sealed)
    }

    /// Sends `event` and records the attempt; whether to go on.
    async fn attempt(
        &self,
        claim: &Claim,
        endpoint: &ClaimedEndpoint,
        key: &SigningKey,
        event: &Event,
        redelivery: bool,
    ) -> Result<bool> {
        let within = claim.deadline.saturating_duration_since(Instant::now());
        let outcome = self.sender.send(&endpoint.url, key, event, within).await;
        let attempt = Attempt {
            event,
            redelivery,
            attempted_at: outcome.attempted_at,
            duration: outcome.duration,
            http_status: outcome.http_status,
            error: outcome.error.clone(),
        };
        let recorded = self
            .store
            .record_webhook_attempt(claim, endpoint, &attempt, &self.schedule)
            .await?;
        match (recorded, &outcome.error) {
            (Recorded::Delivered, _) => return Ok(true),
            (Recorded::Deferred, Some(error)) => {
                tracing::warn!(endpoint = %endpoint.name(), event = %event.id, %error, "webhook not delivered; will retry")
            }
            (Recorded::Disabled, Some(error)) => {
                tracing::warn!(endpoint = %endpoint.name(), event = %event.id, %error, "webhook endpoint disabled after its retries failed")
            }
            (Recorded::LeaseLost, _) => {
                tracing::warn!(endpoint = %endpoint.name(), event = %event.id, "webhook outcome not recorded: the round's lease ran out")
            }
            _ => {}
        }
        Ok(false)
    }
}
