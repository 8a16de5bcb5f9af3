//! Calls run to their end even when their caller leaves.
//!
//! A caller that hangs up (a closed browser tab, a load generator that
//! stops, a proxy whose client went away) resets its stream, and hyper
//! drops the handler's future wherever it was: half-way through a
//! database transaction, the pooled connection comes back with the
//! transaction open and is thrown away (a new server process, a cold
//! statement cache), and a workflow of several steps stops between two of
//! them. [`CompletionLayer`] runs each call's handler as a task of its own
//! instead, so a departed caller only loses the answer: the transaction
//! commits or rolls back, the connection goes back to the pool whole, the
//! workflow reaches a consistent point. The server's request timeout and
//! PostgreSQL's statement timeout still bound how long that takes.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::body::Body;
use tracing::Instrument;

/// Runs every call's handler on a task of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompletionLayer;

impl<S> tower::Layer<S> for CompletionLayer {
    type Service = Completing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Completing { inner }
    }
}

/// The service [`CompletionLayer`] produces.
#[derive(Debug, Clone)]
pub struct Completing<S> {
    inner: S,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Completing<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The task keeps the call's span (its trace) as its parent.
        let handler = tokio::spawn(
            self.inner
                .call(request)
                .instrument(tracing::Span::current()),
        );
        Box::pin(async move {
            match handler.await {
                Ok(Ok(response)) => Ok(response),
                Err(failed) => {
                    tracing::error!(error = %failed, "a call's handler failed");
                    Ok(tonic::Status::internal("the call failed").into_http())
                }
            }
        })
    }
}
