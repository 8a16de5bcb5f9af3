//! Safra's edge gateway: the one public port (`127.0.0.1:8080` by default).
//!
//! Today it answers `/healthz` (the process is alive) and `/readyz` (every
//! service reports SERVING on `grpc.health.v1`, with a JSON body listing
//! each). Native gRPC, grpc-web, REST transcoding from the contracts'
//! `google.api.http` annotations, OpenAPI and the console arrive with the
//! gateway issue, on this same router.

mod readiness;

use std::{future::Future, sync::Arc};

use axum::{Router, routing::get};
use safra::{config::GatewayConfig, tls::MeshTls};
use tokio::net::TcpListener;

pub use readiness::{Readiness, UpstreamState};

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// An upstream URL is not a valid endpoint.
    #[error("SAFRA_{service}_URL: '{url}' is not a valid endpoint: {reason}")]
    Upstream {
        /// The upper-case service name.
        service: String,
        /// The URL given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Serving failed.
    #[error("the gateway failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves the gateway on `listener` until `shutdown` completes, then drains
/// in-flight requests. It calls the services over mutual TLS with `tls` (the
/// gateway's own certificate); its public port is plain HTTP.
///
/// # Errors
/// [`GatewayError`].
pub async fn serve(
    config: &GatewayConfig,
    listener: TcpListener,
    tls: &Arc<MeshTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let readiness = Readiness::new(&config.upstreams, tls)?;
    let router = Router::new()
        .route("/healthz", get(readiness::healthz))
        .route("/readyz", get(readiness::readyz))
        .with_state(readiness);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
