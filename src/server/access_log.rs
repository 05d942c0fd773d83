//! One INFO line per call, when it ends: its gRPC code, how long it took and,
//! for a failure, the status message (in the call's span, with method and
//! request id). A unary call that succeeds carries its code in the trailers,
//! after the response body; a refusal carries it in the response headers
//! (trailers-only). So the line is written when the body ends, or when the
//! body is dropped unfinished (the client went away: CANCELLED).
//!
//! Logged under the target `orgd::access`, which `RUST_LOG` can turn down
//! (`RUST_LOG=info,orgd::access=warn`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http_body::{Frame, SizeHint};
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog(inner)
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S>(S);

impl<S> Service<http::Request<Body>> for AccessLog<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let span = tracing::Span::current();
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await?;
            let ending = CallEnding {
                started,
                span,
                trailers_only: grpc_status(response.headers()),
                logged: false,
            };
            Ok(response.map(|body| Body::new(LoggedBody { body, ending })))
        })
    }
}

/// A response body that writes the call's access line when it ends.
struct LoggedBody {
    body: Body,
    ending: CallEnding,
}

impl http_body::Body for LoggedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let status = grpc_status(trailers);
                    self.ending.log(status);
                }
            }
            Some(Err(status)) => self
                .ending
                .log(Some((status.code(), status.message().into()))),
            None => self.ending.log(None),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // Dropped before its end: the connection or the stream was reset.
        self.ending.log(Some((Code::Cancelled, String::new())));
    }
}

struct CallEnding {
    started: Instant,
    span: tracing::Span,
    /// The status a trailers-only response carries in its headers.
    trailers_only: Option<(Code, String)>,
    logged: bool,
}

impl CallEnding {
    /// Writes the line once; `status` is what the body's end showed.
    fn log(&mut self, status: Option<(Code, String)>) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let (code, detail) = self
            .trailers_only
            .take()
            .or(status)
            .unwrap_or((Code::Ok, String::new()));
        log_call(&self.span, code, &detail, self.started.elapsed());
    }
}

fn log_call(span: &tracing::Span, code: Code, detail: &str, took: Duration) {
    let _in_span = span.enter();
    let micros = took.as_micros() as u64;
    // `detail`, not `message`: JSON logs already name the event `message`.
    if code == Code::Ok {
        tracing::info!(target: "orgd::access", code = ?code, micros, "call finished");
    } else {
        tracing::info!(target: "orgd::access", code = ?code, micros, detail, "call finished");
    }
}

/// The `grpc-status` and decoded `grpc-message` of a header map, if it has them.
fn grpc_status(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .map(|value| {
            percent_encoding::percent_decode(value.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some((Code::from_i32(code), message))
}
