//! Serving a mesh process: binding its listener with a clear error, mutual
//! TLS on every connection, and the standard services every Safra server
//! carries — `grpc.health.v1` (per
//! service, NOT_SERVING while draining) and server reflection (v1 and
//! v1alpha, since the grpcurl builds that install here speak only v1alpha).
//!
//! The full server builder (mTLS, auth, validation, metrics, limits) grows
//! here with the runtime issue; every service already starts through it.

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::{
    descriptor::FILE_DESCRIPTOR_SET,
    mesh::Service,
    tls::{self, MeshTls, TlsError},
};

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is taken or not ours to bind.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// The reflection service could not read the descriptor set.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
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
        .map_err(|reason| ServeError::Bind { addr, reason })
}

/// Serves `service`'s health and reflection on `listener`, over mutual TLS
/// with `tls`, until `shutdown` completes; health turns NOT_SERVING first,
/// then in-flight calls drain.
///
/// # Errors
/// [`ServeError::Tls`], [`ServeError::Reflection`] or [`ServeError::Transport`].
pub async fn serve(
    service: Service,
    listener: TcpListener,
    tls: &Arc<MeshTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let incoming = ReceiverStream::new(tls::accept(listener, tls.server_config()?))
        .map(Ok::<_, std::io::Error>);
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
        .serve_with_incoming_shutdown(incoming, draining)
        .await?;
    Ok(())
}
