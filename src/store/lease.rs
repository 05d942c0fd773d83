//! Claiming work with a lease, as the email outbox and webhook delivery do:
//! one statement takes due rows that are not leased (`FOR UPDATE SKIP LOCKED`,
//! so replicas never claim the same row) and marks them with a lease id and an
//! end; a round that dies leaves the lease to run out, and the rows are due
//! again.

use std::time::Duration;

use diesel::deserialize::QueryableByName;
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Double, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use scoped_futures::ScopedFutureExt;
use tokio::time::Instant;
use uuid::Uuid;

use super::{KeepPrepared, Store};
use crate::error::Result;

/// What one claim took.
pub(super) struct Leased<T> {
    pub lease_id: Uuid,
    /// When the round must stop sending, by this process's clock (`deadline`).
    pub deadline: Instant,
    pub rows: Vec<T>,
}

/// When a round that claims something for `lease` now must stop sending: a
/// margin before the lease ends, so that recording an outcome does not race
/// another replica's claim of the same thing.
fn deadline(lease: Duration) -> Instant {
    let margin = (lease / 10).min(Duration::from_secs(30));
    Instant::now() + (lease - margin)
}

impl Store {
    /// Runs `claim`, a kept prepared statement that leases up to `$3` rows to
    /// lease `$1` for `$2` seconds and returns them, in a statement of its own.
    pub(super) async fn claim_leased<T>(
        &self,
        claim: &'static str,
        limit: i64,
        lease: Duration,
    ) -> Result<Leased<T>>
    where
        T: QueryableByName<Pg> + Send + 'static,
    {
        let lease_id = Uuid::now_v7();
        // Measured from before the claim: the lease may start no earlier.
        let deadline = deadline(lease);
        let rows = self
            .read(|conn| {
                async move {
                    Ok(diesel::sql_query(claim)
                        .bind::<SqlUuid, _>(lease_id)
                        .bind::<Double, _>(lease.as_secs_f64())
                        .bind::<BigInt, _>(limit)
                        .prepared()
                        .load(conn)
                        .await?)
                }
                .scope_boxed()
            })
            .await?;
        Ok(Leased {
            lease_id,
            deadline,
            rows,
        })
    }
}
