//! Serving a mesh process: binding its listener with a clear error, and the
//! standard services every Safra server carries — `grpc.health.v1` (per
//! service, NOT_SERVING while draining) and server reflection (v1 and
//! v1alpha, since the grpcurl builds that install here speak only v1alpha).
//!
//! The full server builder (mTLS, auth, validation, metrics, limits) grows
//! here with the runtime issue; every service already starts through it.

use std::{future::Future, net::SocketAddr};

use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{descriptor::FILE_DESCRIPTOR_SET, mesh::Service};

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is taken or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The reflection service could not read the descriptor set.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed while serving.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `addr`, naming the address in the error (a port in use is the most
/// common start-up failure and deserves one clear line).
///
/// # Errors
/// [`ServeError::Bind`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `service`'s health and reflection on `listener` until `shutdown`
/// completes; health turns NOT_SERVING first, then in-flight calls drain.
///
/// # Errors
/// [`ServeError::Reflection`] or [`ServeError::Transport`].
pub async fn serve(
    service: Service,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(service.grpc_service(), ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .with_service_name(service.grpc_service())
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .with_service_name(service.grpc_service())
        .build_v1alpha()?;

    let draining = async move {
        shutdown.await;
        health
            .set_service_status(service.grpc_service(), ServingStatus::NotServing)
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    };

    Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), draining)
        .await?;
    Ok(())
}
