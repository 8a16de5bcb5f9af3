//! The trace stage of a mesh server: every call runs in a `grpc.server` span
//! whose parent is the caller's W3C `traceparent`, so one trace follows a
//! request across services and every log line of the call carries its ids.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::body::Body;
use tracing::Instrument;

use crate::observability::telemetry;

/// The tower layer opening a server span per call.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service [`TraceLayer`] produces.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for TraceService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
        );
        // A malformed or absent traceparent starts a new trace.
        telemetry::follow(&span, request.headers());
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(response.instrument(span))
    }
}
