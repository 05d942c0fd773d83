//! PostgreSQL access: the pool, migrations, transactions with retry, and one
//! module per aggregate. Invariants are enforced here, inside transactions, with
//! constraints and row locks, so several orgd replicas can share one database.

pub mod access;
pub mod audit;
pub mod billing_profiles;
pub mod invitations;
pub mod invoices;
pub mod members;
pub mod orgs;
pub mod outbox;
pub mod resources;
mod schema;
pub mod subscriptions;
pub mod tokens;
pub mod users;

use std::time::Duration;

use anyhow::Context;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, bb8};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use scoped_futures::ScopedBoxFuture;

use crate::error::{Error, Result};

pub use audit::{Actor, TokenLimit};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory-lock key that serializes migrations across replicas ("orgd" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f72_6764;

/// Attempts of a transaction that keeps losing serialization conflicts.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

pub type Conn = AsyncPgConnection;
type Pool = bb8::Pool<AsyncPgConnection>;

/// Handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    pub async fn connect(
        url: &str,
        pool_size: u32,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        let pool = Pool::builder()
            .max_size(pool_size)
            .connection_timeout(acquire_timeout)
            .build(manager)
            .await
            .context("creating the database pool")?;
        Ok(Store { pool })
    }

    async fn conn(&self) -> Result<bb8::PooledConnection<'_, AsyncPgConnection>> {
        self.pool
            .get()
            .await
            .map_err(|err| Error::Unavailable(format!("the database is unavailable: {err}")))
    }

    /// Runs a read-only query on a pooled connection.
    pub async fn read<'a, T, F>(&self, op: F) -> Result<T>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> ScopedBoxFuture<'a, 'c, Result<T>>,
    {
        let mut conn = self.conn().await?;
        op(&mut conn).await
    }

    /// Runs `op` in a transaction, retrying it from the start when PostgreSQL
    /// reports a serialization failure. Callers take the row locks they need.
    pub async fn write<'a, T, F>(&self, mut op: F) -> Result<T>
    where
        T: Send + 'a,
        F: for<'c> FnMut(&'c mut Conn) -> ScopedBoxFuture<'a, 'c, Result<T>> + Send + 'a,
    {
        let mut conn = self.conn().await?;
        let mut attempt = 1;
        loop {
            match conn.transaction(async |c| op(c).await).await {
                Err(Error::SerializationConflict) if attempt < MAX_TRANSACTION_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "retrying transaction after a serialization failure"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Whether the database answers a trivial query now.
    pub async fn is_healthy(&self) -> bool {
        let Ok(mut conn) = self.conn().await else {
            return false;
        };
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .is_ok()
    }
}

/// Applies pending migrations on a dedicated connection.
pub async fn run_migrations(url: &str) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .context("connecting to the database to run migrations")?;
    // Replicas starting together take turns; the lock ends with the connection.
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .await
        .context("waiting for the migration lock")?;
    let mut harness = AsyncMigrationHarness::new(conn);
    let applied = harness
        .run_pending_migrations(MIGRATIONS)
        .map_err(|err| anyhow::anyhow!("running migrations: {err}"))?;
    for version in applied {
        tracing::info!(%version, "applied migration");
    }
    Ok(())
}
