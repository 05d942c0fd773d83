//! The client connections orgd accepts: at most `max_connections` open at once
//! (the acceptor waits for one to close before it accepts another), TCP_NODELAY
//! on each, and a deadline by which a new connection must have sent its first
//! call (HTTP/2 preface, settings and the first request's headers). A client
//! that connects and says nothing, or only the preface, is closed then instead
//! of holding a socket and a task forever.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

/// Limits on accepted connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub first_call_deadline: Duration,
}

/// The accepted connections of `listener`, as tonic's `serve_with_incoming` takes them.
pub fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<ClientConnection>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let accepted = match listener.accept().await {
            Ok((stream, remote_addr)) => stream.set_nodelay(true).map(|()| ClientConnection {
                stream,
                remote_addr,
                first_call: FirstCall::default(),
                deadline: Some(Box::pin(tokio::time::sleep(limits.first_call_deadline))),
                _slot: slot,
            }),
            Err(err) => {
                // Out of file descriptors, say: give the server a moment
                // instead of spinning on the same error.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(err)
            }
        };
        Some((accepted, (listener, slots)))
    })
}

/// Set once the connection's first call arrives; shared with the calls
/// through tonic's connect info.
#[derive(Debug, Clone, Default)]
pub struct FirstCall(Arc<AtomicBool>);

impl FirstCall {
    pub fn arrived(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn has_arrived(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a call learns of its connection (in its request extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote_addr: SocketAddr,
    pub first_call: FirstCall,
}

/// An accepted TCP connection that holds one of the open-connection slots
/// until it closes.
pub struct ClientConnection {
    stream: TcpStream,
    remote_addr: SocketAddr,
    first_call: FirstCall,
    /// Until the first call arrives.
    deadline: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl Connected for ClientConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            remote_addr: self.remote_addr,
            first_call: self.first_call.clone(),
        }
    }
}

impl AsyncRead for ClientConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Whatever the client sent is read first, so that a call arriving
        // just before the deadline is served; the deadline counts only while
        // the server waits for the client.
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if read.is_ready() {
            return read;
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if this.first_call.has_arrived() {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(remote = %this.remote_addr, "closing a connection that made no call in time");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no call arrived before the connection's first-call deadline",
                )));
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for ClientConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
