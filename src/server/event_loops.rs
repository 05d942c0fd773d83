//! orgd serves calls on one single-threaded event loop per core. Each loop has
//! its own database pool and serves the connections handed to it.
//!
//! Why not one work-stealing runtime: a call passes through three tasks (the
//! HTTP/2 connection, the call's own stream, the database connection). On a
//! shared runtime each hand-off between them may wake another thread. On its
//! loop, a call never leaves one thread (BENCHMARKS.md, item 24).
//!
//! The price: a client connection stays on the loop that accepted it, with that
//! loop's core and share of the pool, and a call that keeps its loop busy delays
//! the loop's other calls. A client that needs more than one core of orgd opens
//! several connections (in tonic, `Channel::balance_list` over one address
//! repeated; grpc-go and grpc-java have pool options).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::OrgdRouter;
use crate::store::Store;

/// Builds what a loop serves, on the loop's own thread, from the loop's pool.
pub type BuildRouter = dyn Fn(Store) -> anyhow::Result<OrgdRouter> + Send + Sync;

/// Fewer database connections than this per loop, and one slow call (a row
/// lock waited for) leaves the loop's other calls waiting for a connection:
/// by default, orgd runs fewer loops than cores rather than go below it.
const MIN_DEFAULT_CONNECTIONS_PER_LOOP: u32 = 4;

/// How many loops and the database pool of each.
pub struct LoopPools {
    pub database_url: String,
    /// One entry per loop: its number of connections.
    pub sizes: Vec<u32>,
    pub acquire_timeout: Duration,
}

impl LoopPools {
    /// `total` connections shared out as evenly as they go among `loops` loops,
    /// or by default one loop per core with at least
    /// `MIN_DEFAULT_CONNECTIONS_PER_LOOP` connections each. Never more loops
    /// than connections: each loop has at least one.
    pub fn split(
        database_url: &str,
        total: u32,
        loops: Option<u16>,
        acquire_timeout: Duration,
    ) -> Self {
        let loops = match loops {
            Some(loops) => {
                let loops = u32::from(loops).max(1);
                if loops > total {
                    tracing::warn!(
                        event_loops = loops,
                        pool_size = total,
                        "fewer connections than event loops: running one loop per connection"
                    );
                }
                loops.min(total)
            }
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let cores = u32::try_from(cores).unwrap_or(u32::MAX);
                cores.min(total / MIN_DEFAULT_CONNECTIONS_PER_LOOP).max(1)
            }
        };
        let sizes = (0..loops)
            .map(|i| total / loops + u32::from(i < total % loops))
            .collect();
        LoopPools {
            database_url: database_url.to_owned(),
            sizes,
            acquire_timeout,
        }
    }
}

/// The running loops.
pub struct EventLoops {
    /// Where each loop takes the connections it is to serve.
    connections: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

/// The index of each loop that ends, as it ends. Before the drain a loop never
/// ends on its own: one that does has failed.
pub type LoopEnds = mpsc::UnboundedReceiver<usize>;

impl EventLoops {
    /// Starts one loop per pool. When `drain` turns true (or its sender goes),
    /// each loop stops taking connections and waits for its calls in flight, at
    /// most `grace`. Returns once every loop has built its router, or with the
    /// first loop's error.
    pub async fn start(
        pools: LoopPools,
        build: Arc<BuildRouter>,
        drain: watch::Receiver<bool>,
        grace: Duration,
    ) -> anyhow::Result<(Self, LoopEnds)> {
        let (ended, ends) = mpsc::unbounded_channel();
        let mut loops = EventLoops {
            connections: Vec::new(),
            threads: Vec::new(),
        };
        let mut readiness = Vec::new();
        for (index, &pool_size) in pools.sizes.iter().enumerate() {
            let (connections, incoming) = mpsc::unbounded_channel();
            let (ready, is_ready) = oneshot::channel();
            let event_loop = EventLoop {
                index,
                database_url: application_name(&pools.database_url, &format!("orgd-loop-{index}")),
                pool_size,
                acquire_timeout: pools.acquire_timeout,
                build: build.clone(),
                incoming,
                drain: drain.clone(),
                grace,
            };
            let ended = ended.clone();
            let thread = std::thread::Builder::new()
                .name(format!("orgd-loop-{index}"))
                .spawn(move || {
                    // Reports the end even if the loop panics.
                    let _report = EndReport { index, ended };
                    event_loop.run(ready)
                })
                .context("starting an event loop thread")?;
            loops.connections.push(connections);
            loops.threads.push(thread);
            readiness.push(is_ready);
        }
        for (index, is_ready) in readiness.into_iter().enumerate() {
            let setup = match is_ready.await {
                Ok(setup) => setup,
                Err(_) => Err(anyhow::anyhow!("it ended before it was ready")),
            };
            if let Err(err) = setup {
                // The other loops end once `drain`'s sender or their senders go.
                let _ = loops.finished().await;
                return Err(err.context(format!("starting event loop {index}")));
            }
        }
        Ok((loops, ends))
    }

    pub fn count(&self) -> usize {
        self.connections.len()
    }

    /// Accepts connections and hands them to the loops in turn, until `drain`
    /// turns true (or its sender goes); then closes the listening socket, so
    /// that new clients are refused at once instead of left waiting.
    pub async fn accept(&self, listener: TcpListener, drain: watch::Receiver<bool>) {
        let drained = drained(drain);
        tokio::pin!(drained);
        let mut next = 0;
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut drained => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, say: wait for some to close
                    // rather than spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY, a response that spans several segments
            // waits for the client's delayed ACK: ~40 ms per call.
            let stream = match stream.set_nodelay(true).and_then(|()| stream.into_std()) {
                Ok(stream) => stream,
                Err(err) => {
                    // This connection only (its peer gone already, say).
                    tracing::debug!(%err, "dropping an accepted connection");
                    continue;
                }
            };
            next = self.hand_over(stream, next);
        }
    }

    /// Gives `stream` to loop `next`, or to the first after it that still
    /// runs; returns the loop whose turn is next.
    fn hand_over(&self, mut stream: std::net::TcpStream, next: usize) -> usize {
        let count = self.connections.len();
        for offset in 0..count {
            let index = (next + offset) % count;
            match self.connections[index].send(stream) {
                Ok(()) => return (index + 1) % count,
                Err(mpsc::error::SendError(refused)) => stream = refused,
            }
        }
        // Every loop has ended: they are draining, or failed (`LoopEnds` tells).
        drop(stream);
        next
    }

    /// Waits for every loop to end; the first error, if any.
    pub async fn finished(self) -> anyhow::Result<()> {
        drop(self.connections);
        let mut outcome = Ok(());
        for (index, thread) in self.threads.into_iter().enumerate() {
            let ended = tokio::task::spawn_blocking(move || thread.join())
                .await
                .context("waiting for an event loop")?;
            let result = ended
                .unwrap_or_else(|_| Err(anyhow::anyhow!("it panicked")))
                .with_context(|| format!("event loop {index}"));
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }
}

/// Completes when `drain` turns true, or when its sender goes: the server is
/// going away then too.
async fn drained(mut drain: watch::Receiver<bool>) {
    let _ = drain.wait_for(|draining| *draining).await;
}

/// `url` with the `application_name` PostgreSQL shows for its sessions
/// (`pg_stat_activity`), unless it names one already.
pub fn application_name(url: &str, name: &str) -> String {
    if url.contains("application_name=") {
        url.to_owned()
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}application_name={name}")
    } else {
        // The key=value form.
        format!("{url} application_name={name}")
    }
}

/// Sends the loop's index when dropped: when its thread ends, however it ends.
struct EndReport {
    index: usize,
    ended: mpsc::UnboundedSender<usize>,
}

impl Drop for EndReport {
    fn drop(&mut self) {
        let _ = self.ended.send(self.index);
    }
}

/// One loop, before its thread starts.
struct EventLoop {
    index: usize,
    database_url: String,
    pool_size: u32,
    acquire_timeout: Duration,
    build: Arc<BuildRouter>,
    incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    drain: watch::Receiver<bool>,
    grace: Duration,
}

impl EventLoop {
    /// The loop's thread: builds its pool and router (reporting on `ready`),
    /// then serves until drained.
    fn run(self, ready: oneshot::Sender<anyhow::Result<()>>) -> anyhow::Result<()> {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = ready.send(Err(err.into()));
                return Ok(());
            }
        };
        let index = self.index;
        runtime.block_on(async move {
            // Created here, so that the pool's connection tasks run on this loop.
            let setup = async {
                let store =
                    Store::connect(&self.database_url, self.pool_size, self.acquire_timeout)
                        .await?;
                (self.build)(store)
            };
            let router = match setup.await {
                Ok(router) => router,
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return Ok(());
                }
            };
            let _ = ready.send(Ok(()));
            let mut incoming = self.incoming;
            let connections = futures_util::stream::poll_fn(move |cx| {
                incoming
                    .poll_recv(cx)
                    .map(|stream| stream.map(tokio::net::TcpStream::from_std))
            });
            let serve = router.serve_with_incoming_shutdown(connections, drained(self.drain.clone()));
            let grace = self.grace;
            tokio::select! {
                served = serve => served.context("serving"),
                () = async { drained(self.drain).await; tokio::time::sleep(grace).await } => {
                    tracing::warn!(event_loop = index, ?grace, "in-flight calls outlived the shutdown grace period; dropping them");
                    Ok(())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(total: u32, loops: Option<u16>) -> Vec<u32> {
        LoopPools::split("postgres://", total, loops, Duration::from_secs(1)).sizes
    }

    #[test]
    fn connections_are_shared_out_evenly_and_never_exceed_the_total() {
        assert_eq!(sizes(16, Some(2)), [8, 8]);
        assert_eq!(sizes(5, Some(2)), [3, 2]);
        assert_eq!(sizes(4, Some(3)), [2, 1, 1]);
        // More loops than connections: one loop per connection.
        assert_eq!(sizes(2, Some(8)), [1, 1]);
    }

    #[test]
    fn by_default_a_loop_has_at_least_four_connections_unless_there_is_one_loop() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = sizes(16, None);
        assert_eq!(default.len(), cores.clamp(1, 4));
        assert_eq!(default.iter().sum::<u32>(), 16);
        assert!(default.iter().all(|&size| size >= 4), "{default:?}");
        assert_eq!(sizes(3, None), [3]);
    }

    #[test]
    fn sessions_are_named_after_their_loop_unless_the_url_names_them() {
        assert_eq!(
            application_name("postgres://u@h/db", "orgd-loop-1"),
            "postgres://u@h/db?application_name=orgd-loop-1"
        );
        assert_eq!(
            application_name("postgresql://u@h/db?sslmode=require", "orgd-loop-0"),
            "postgresql://u@h/db?sslmode=require&application_name=orgd-loop-0"
        );
        assert_eq!(
            application_name("host=h dbname=db", "orgd-loop-0"),
            "host=h dbname=db application_name=orgd-loop-0"
        );
        let named = "postgres://h/db?application_name=billing";
        assert_eq!(application_name(named, "orgd-loop-0"), named);
    }
}
