//! PostgreSQL access: the pool, migrations, transactions with retry, and one
//! module per aggregate. Invariants are enforced here, inside transactions, with
//! constraints and row locks, so several orgd replicas can share one database.

pub mod access;
pub mod accounts;
pub mod audit;
pub mod billing_profiles;
mod catalog;
mod change;
pub mod checks;
mod closing;
mod connect;
mod contact_email;
pub mod events;
mod expiries;
mod invitation_answers;
pub mod invitations;
pub mod invoice_payments;
pub mod invoices;
mod lease;
mod limits;
pub mod member_changes;
pub mod members;
mod org_deletion;
pub mod org_row;
pub mod orgs;
pub mod outbox;
mod paging;
mod period_close;
pub mod proof;
pub mod resources;
mod schema;
pub mod standing;
pub mod subscription_row;
pub mod subscriptions;
mod tls;
pub mod tokens;
pub mod usage_charges;
pub mod users;
pub mod verification;
pub mod webhook_delivery;
pub mod webhooks;

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use anyhow::Context;
use diesel::QueryResult;
use diesel::connection::TransactionDepthChange;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl,
    SimpleAsyncConnection, TransactionManager,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use scoped_futures::{ScopedBoxFuture, ScopedFutureExt};

use crate::error::{Error, Result};

pub use audit::{Actor, TokenLimit};
pub use connect::DbConfig;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory-lock key that serializes migrations across replicas ("orgd" in ASCII).
const MIGRATION_LOCK: i64 = 0x6f72_6764;

/// Attempts of a transaction that keeps losing serialization conflicts.
const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

pub type Conn = AsyncPgConnection;

/// A pooled connection. One given back in the middle of an operation (its call
/// was dropped: the client went away or its deadline passed) is closed rather
/// than pooled: PostgreSQL then rolls back its transaction and releases its
/// locks now, and the next caller does not queue behind a statement still
/// running for nobody.
struct Checkout {
    conn: Option<Object<AsyncPgConnection>>,
    /// Set once the operation ran to its end.
    finished: bool,
}

impl Checkout {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Deref for Checkout {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Checkout {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && (!self.finished || conn.is_broken())
        {
            drop(Object::take(conn));
        }
    }
}

/// Handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// deadpool hands freed connections to waiting callers first come, first
    /// served (its waiters queue on a fair semaphore).
    pool: Pool<AsyncPgConnection>,
    acquire_timeout: Duration,
    /// How long after it is issued an invoice is due: every way a billing
    /// period closes issues one, so the store carries the term.
    invoice_due: Duration,
}

/// `--invoice-due`'s default: 14 days, as Stripe's `days_until_due` often is.
pub const DEFAULT_INVOICE_DUE: Duration = Duration::from_secs(14 * 24 * 60 * 60);

impl Store {
    /// A pool of up to `pool_size` connections made as `db` says; the first is
    /// opened now, so that a database orgd cannot reach fails start-up at once,
    /// saying where and why.
    pub async fn connect(
        db: &DbConfig,
        pool_size: u32,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut manager_config = ManagerConfig::default();
        let setup = db.clone();
        manager_config.custom_setup = Box::new(move |_url| {
            let setup = setup.clone();
            Box::pin(async move { setup.establish().await })
        });
        // A ping on every checkout would be one more round trip per query
        // (several per call); a broken connection fails its query instead,
        // and is dropped when it comes back.
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            &db.url,
            manager_config,
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size as usize)
            .build()
            .context("creating the database pool")?;
        drop(pool.get().await.map_err(|err| anyhow::anyhow!("{err}"))?);
        Ok(Store {
            pool,
            acquire_timeout,
            invoice_due: DEFAULT_INVOICE_DUE,
        })
    }

    /// This store, issuing invoices due `invoice_due` after they are issued.
    pub fn with_invoice_due(self, invoice_due: Duration) -> Self {
        Store {
            invoice_due,
            ..self
        }
    }

    async fn conn(&self) -> Result<Checkout> {
        match tokio::time::timeout(self.acquire_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(Checkout {
                conn: Some(conn),
                finished: false,
            }),
            Ok(Err(err)) => Err(Error::Unavailable(format!(
                "the database is unavailable: {err}"
            ))),
            Err(_) => Err(Error::Unavailable(format!(
                "the database is busy: no connection came free within {:?}",
                self.acquire_timeout
            ))),
        }
    }

    /// Runs `op`, statements outside a transaction, on a pooled connection.
    pub async fn read<'a, T, F>(&self, op: F) -> Result<T>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> ScopedBoxFuture<'a, 'c, Result<T>>,
    {
        let mut conn = self.conn().await?;
        let result = op(&mut conn).await;
        conn.finish();
        result
    }

    /// Runs `op` in a transaction, retrying it from the start when PostgreSQL
    /// reports a serialization failure. Callers take the row locks they need.
    pub async fn write<'a, T, F>(&self, mut op: F) -> Result<T>
    where
        T: Send + 'a,
        F: for<'c> FnMut(&'c mut Conn) -> ScopedBoxFuture<'a, 'c, Result<T>> + Send + 'a,
    {
        self.write_from(|_| async { Ok(()) }.scope_boxed(), move |conn, ()| op(conn))
            .await
    }

    /// `write`, whose first statements (`first`: usually the lock the
    /// transaction hangs on) go out together with its BEGIN, one round trip
    /// fewer; `op` goes on from what they read.
    pub async fn write_from<'a, L, T, F, G>(&self, mut first: F, mut op: G) -> Result<T>
    where
        L: Send + 'a,
        T: Send + 'a,
        F: for<'c> FnMut(&'c Conn) -> ScopedBoxFuture<'a, 'c, Result<L>> + Send + 'a,
        G: for<'c> FnMut(&'c mut Conn, L) -> ScopedBoxFuture<'a, 'c, Result<T>> + Send + 'a,
    {
        let mut conn = self.conn().await?;
        let mut attempt = 1;
        loop {
            match transaction(&mut conn, &mut first, &mut op).await {
                Err(Error::SerializationConflict) if attempt < MAX_TRANSACTION_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        "retrying transaction after a serialization failure"
                    );
                    attempt += 1;
                }
                result => {
                    conn.finish();
                    return result;
                }
            }
        }
    }
}

impl Store {
    /// PostgreSQL's `lc_messages`. diesel reports lock and statement timeouts
    /// and deadlocks only by their message text, which orgd reads in English.
    pub async fn messages_locale(&self) -> Result<String> {
        #[derive(diesel::QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Text)]
            lc_messages: String,
        }
        self.read(|conn| {
            async move {
                let setting: Setting = diesel::sql_query("SHOW lc_messages")
                    .get_result(conn)
                    .await?;
                Ok(setting.lc_messages)
            }
            .scope_boxed()
        })
        .await
    }
}

/// Whether the database answers, asked on a connection of its own: a pool
/// busy with calls is not a database that is down.
pub struct DbProbe {
    db: DbConfig,
    conn: tokio::sync::Mutex<Option<AsyncPgConnection>>,
}

impl DbProbe {
    pub fn new(db: &DbConfig) -> Self {
        DbProbe {
            db: db.clone(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether a trivial query is answered now (connecting first if needed).
    pub async fn answers(&self) -> bool {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = self.db.establish().await.ok();
        }
        let Some(open) = conn.as_mut() else {
            return false;
        };
        let answered = diesel::sql_query("SELECT 1")
            .prepared()
            .execute(open)
            .await
            .is_ok();
        if !answered {
            // Reconnect next time: the server may have restarted.
            *conn = None;
        }
        answered
    }
}

/// One attempt of a transaction: diesel-async's `transaction`, except that
/// BEGIN is sent together with `first` (PostgreSQL runs them in order). The
/// transaction counts as open before BEGIN is sent, so if the call is dropped
/// midway the pool discards the connection rather than reuse an open transaction.
async fn transaction<'a, L, T, F, G>(conn: &mut Conn, first: &mut F, op: &mut G) -> Result<T>
where
    F: for<'c> FnMut(&'c Conn) -> ScopedBoxFuture<'a, 'c, Result<L>>,
    G: for<'c> FnMut(&'c mut Conn, L) -> ScopedBoxFuture<'a, 'c, Result<T>>,
{
    let status =
        AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_state()?;
    // BEGIN inside a transaction would be ignored, and the COMMIT would then
    // release a savepoint that was never made: refuse, as diesel-async does.
    if status.transaction_depth().is_some() {
        return Err(diesel::result::Error::AlreadyInTransaction.into());
    }
    status.change_transaction_depth(TransactionDepthChange::IncreaseDepth)?;
    let outcome = async {
        let mut shared: &Conn = conn;
        let ((), read) = both(
            async { Ok(shared.batch_execute("BEGIN").await?) },
            first(conn),
        )
        .await?;
        op(conn, read).await
    }
    .await;
    match outcome {
        Ok(value) => match AnsiTransactionManager::commit_transaction(conn).await {
            Ok(()) => Ok(value),
            // COMMIT was sent: PostgreSQL may have applied it before the
            // connection went. Saying "retry" would invite doing it twice.
            Err(err) if crate::error::lost_connection(&err).is_some() => {
                tracing::warn!(error = %err, "the database connection was lost while committing");
                Err(Error::OutcomeUnknown(
                    "the database connection was lost while committing: the change may have been made; read it back before retrying".into(),
                ))
            }
            Err(err) => Err(err.into()),
        },
        Err(error) => match AnsiTransactionManager::rollback_transaction(conn).await {
            // As diesel-async does: the cause matters more than a failed cleanup.
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// A query that the connection keeps prepared. diesel never caches a
/// `sql_query` (its text could be built at run time) nor an update of optional
/// fields, so each run would cost a round trip to prepare it first. Wrap only
/// queries whose text comes from a small fixed set: one cache entry each.
pub(crate) struct Prepared<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

/// Cached by SQL text, like every query without a static type id.
impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// Runs two statements on one connection at once, so that they go out together
/// (pipelined: one round trip), and returns the first error in the order they
/// were sent. `first` is always polled first, so it is sent first; once it
/// fails, PostgreSQL refuses the rest of the transaction, and that refusal must
/// not hide the cause (a serialization failure has to stay retryable).
pub(crate) async fn both<A, B>(
    first: impl Future<Output = Result<A>>,
    second: impl Future<Output = Result<B>>,
) -> Result<(A, B)> {
    let (first, second) = futures_util::future::join(first, second).await;
    Ok((first?, second?))
}

/// `query.prepared()` for `Prepared(query)`, at the end of a query chain: every
/// raw `sql_query` with a constant text and every UPDATE needs it.
pub(crate) trait KeepPrepared: Sized {
    fn prepared(self) -> Prepared<Self> {
        Prepared(self)
    }
}

impl<Q> KeepPrepared for Q {}

/// Applies pending migrations on a dedicated connection, with no statement or
/// lock timeout (a migration may rewrite a large table).
pub async fn run_migrations(url: &str) -> anyhow::Result<()> {
    let mut conn = DbConfig::unlimited(url, "orgd-migrations")
        .establish()
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
