//! orgd serves calls on one single-threaded event loop per core. Each loop has
//! its own database pool and serves the connections handed to it.
//!
//! Why not one work-stealing runtime: a call passes through three tasks (the
//! HTTP/2 connection, the call's own stream, the database connection). On a
//! shared runtime each hand-off between them may wake another thread. On its
//! loop, a call never leaves one thread. BENCHMARKS.md (item 24) has the numbers.
//! The cost: one client connection is served by one core. A client that needs
//! more than a core of orgd opens several connections, as pooled gRPC clients do.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::OrgdRouter;
use crate::store::Store;

/// Builds what a loop serves, on the loop's own thread, from the loop's pool.
pub type BuildRouter = dyn Fn(Store) -> anyhow::Result<OrgdRouter> + Send + Sync;

/// The database pool of each loop.
pub struct LoopPools {
    pub database_url: String,
    /// One entry per loop: its number of connections.
    pub sizes: Vec<u32>,
    pub acquire_timeout: Duration,
}

impl LoopPools {
    /// `total` connections shared out among `loops` loops, as evenly as they go.
    /// There are never more loops than connections, so each loop has at least one.
    pub fn split(database_url: &str, total: u32, loops: usize, acquire_timeout: Duration) -> Self {
        let loops = u32::try_from(loops).unwrap_or(u32::MAX).clamp(1, total);
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

impl EventLoops {
    /// Starts one loop per pool. When `drain` turns true, each loop stops taking
    /// connections and waits for its calls in flight, at most `grace`. Returns
    /// once every loop has its pool and its router, or with the first loop's
    /// error.
    pub async fn start(
        pools: LoopPools,
        build: Arc<BuildRouter>,
        drain: watch::Receiver<bool>,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        let mut loops = EventLoops {
            connections: Vec::new(),
            threads: Vec::new(),
        };
        let mut readiness = Vec::new();
        for (index, &pool_size) in pools.sizes.iter().enumerate() {
            let (connections, incoming) = mpsc::unbounded_channel();
            let (ready, is_ready) = oneshot::channel();
            let event_loop = EventLoop {
                database_url: pools.database_url.clone(),
                pool_size,
                acquire_timeout: pools.acquire_timeout,
                build: build.clone(),
                incoming,
                drain: drain.clone(),
                grace,
            };
            let thread = std::thread::Builder::new()
                .name(format!("orgd-loop-{index}"))
                .spawn(move || event_loop.run(ready))
                .context("starting an event loop thread")?;
            loops.connections.push(connections);
            loops.threads.push(thread);
            readiness.push(is_ready);
        }
        for is_ready in readiness {
            match is_ready.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err),
                // The loop ended before it was ready: its thread holds the error.
                Err(_) => {
                    return Err(loops.finished().await.err().unwrap_or_else(|| {
                        anyhow::anyhow!("an event loop ended before it started serving")
                    }));
                }
            }
        }
        Ok(loops)
    }

    pub fn count(&self) -> usize {
        self.connections.len()
    }

    /// Accepts connections and hands them to the loops in turn, until `drain`
    /// turns true; then closes the listening socket, so that new clients are
    /// refused at once instead of left waiting.
    pub async fn accept(&self, listener: TcpListener, mut drain: watch::Receiver<bool>) {
        let mut next = 0;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = drain.wait_for(|draining| *draining) => return,
            };
            let stream = match accepted.and_then(|(stream, _)| {
                // Without TCP_NODELAY, a response that spans several segments
                // waits for the client's delayed ACK: ~40 ms per call.
                stream.set_nodelay(true)?;
                stream.into_std()
            }) {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors, say: wait for some to close
                    // rather than spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // A loop that ended drops its receiver; its turn passes to the next.
            if self.connections[next].send(stream).is_err() {
                tracing::error!(event_loop = next, "an event loop has stopped");
            }
            next = (next + 1) % self.connections.len();
        }
    }

    /// Waits for every loop to end; the first error, if any.
    pub async fn finished(self) -> anyhow::Result<()> {
        drop(self.connections);
        let mut outcome = Ok(());
        for thread in self.threads {
            let ended = tokio::task::spawn_blocking(move || thread.join())
                .await
                .context("waiting for an event loop")?;
            let result = ended.unwrap_or_else(|_| Err(anyhow::anyhow!("an event loop panicked")));
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }
}

/// One loop, before its thread starts.
struct EventLoop {
    database_url: String,
    pool_size: u32,
    acquire_timeout: Duration,
    build: Arc<BuildRouter>,
    incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    drain: watch::Receiver<bool>,
    grace: Duration,
}

impl EventLoop {
    /// The loop's thread: sets up its pool and router (reporting on `ready`),
    /// then serves until drained.
    fn run(self, ready: oneshot::Sender<anyhow::Result<()>>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building an event loop's runtime")?;
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
            let draining = |mut drain: watch::Receiver<bool>| async move {
                // A dropped sender means the server is going away: drain too.
                let _ = drain.wait_for(|draining| *draining).await;
            };
            let serve =
                router.serve_with_incoming_shutdown(connections, draining(self.drain.clone()));
            let grace = self.grace;
            tokio::select! {
                served = serve => served.context("serving"),
                () = async { draining(self.drain).await; tokio::time::sleep(grace).await } => {
                    tracing::warn!(?grace, "in-flight calls outlived the shutdown grace period; dropping them");
                    Ok(())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(total: u32, loops: usize) -> Vec<u32> {
        LoopPools::split("postgres://", total, loops, Duration::from_secs(1)).sizes
    }

    #[test]
    fn connections_are_shared_out_evenly_and_never_exceed_the_total() {
        assert_eq!(sizes(16, 2), [8, 8]);
        assert_eq!(sizes(5, 2), [3, 2]);
        assert_eq!(sizes(4, 3), [2, 1, 1]);
        // More loops than connections: one loop per connection.
        assert_eq!(sizes(2, 8), [1, 1]);
        assert_eq!(sizes(1, 0), [1]);
    }
}
