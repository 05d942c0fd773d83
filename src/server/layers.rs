//! The steps a call passes before the auth layer, each a tower layer of its
//! own (assembled in order in `server::serve_calls`): its connection learns that
//! a call arrived; the call gets a request id (the caller's `x-request-id` when
//! usable, else a new UUIDv7), echoed in the response, and a tracing span
//! carrying method and request id; then anything but gRPC is answered HTTP 415.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready};
use tonic::body::Body;
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::connections::ConnectionInfo;

/// Tells the call's connection that its first call arrived (the first-call
/// deadline then no longer applies).
pub fn mark_first_call(request: http::Request<Body>) -> http::Request<Body> {
    if let Some(connection) = request.extensions().get::<ConnectionInfo>() {
        connection.first_call.arrived();
    }
    request
}

/// Answers HTTP 415 to a request that is not gRPC (`application/grpc…`), as
/// the gRPC spec says, before anything else is read.
#[derive(Debug, Clone, Copy)]
pub struct GrpcOnlyLayer;

impl<S> Layer<S> for GrpcOnlyLayer {
    type Service = GrpcOnly<S>;

    fn layer(&self, inner: S) -> GrpcOnly<S> {
        GrpcOnly(inner)
    }
}

#[derive(Debug, Clone)]
pub struct GrpcOnly<S>(S);

impl<S> Service<http::Request<Body>> for GrpcOnly<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // `application/grpc`, alone or followed by `+proto`, `;…` (not grpc-web).
        let is_grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.as_bytes().strip_prefix(b"application/grpc"))
            .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')));
        if is_grpc {
            Either::Left(self.0.call(request))
        } else {
            let mut response = http::Response::new(Body::empty());
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            Either::Right(futures_util::future::ready(Ok(response)))
        }
    }
}

const REQUEST_ID: &str = "x-request-id";

/// Drops a caller's `x-request-id` that would make a poor log field (empty,
/// over 128 bytes, or not printable ASCII), so that the call gets a new one.
pub fn drop_unusable_request_id(mut request: http::Request<Body>) -> http::Request<Body> {
    let usable = |id: &http::HeaderValue| {
        !id.is_empty() && id.len() <= 128 && id.as_bytes().iter().all(u8::is_ascii_graphic)
    };
    if request
        .headers()
        .get(REQUEST_ID)
        .is_some_and(|id| !usable(id))
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// A new request id: a UUIDv7, so that ids sort by time.
#[derive(Debug, Clone, Copy)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7().to_string();
        http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The span every event of a call is logged in.
pub fn call_span<B>(request: &http::Request<B>) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method = %request.uri().path(),
        request_id = %crate::auth::request_id(request),
    )
}
