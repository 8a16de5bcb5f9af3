//! Channels from one mesh process to another: HTTP/2 over mutual TLS, the
//! server checked by its SPIFFE id. Typed stubs are built on these channels
//! (`WalletServiceClient::new(channel)`).
//!
//! Token forwarding, deadline propagation, retries for idempotent methods,
//! load balancing over several endpoints and trace-context injection join
//! this builder with the runtime issue.

use std::{future::Future, io, pin::Pin, sync::Arc, task::Poll, time::Duration};

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::net::TcpStream;
use tonic::{
    codegen::http::Uri,
    transport::{Channel, Endpoint},
};

use crate::tls::{MeshTls, TlsError};

/// How long establishing a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not `host:port` (optionally behind `https://`).
    #[error("'{0}' is not an endpoint like https://127.0.0.1:7003 or wallet:7003")]
    Endpoint(String),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Connects TCP, then TLS with the mesh's client configuration.
#[derive(Debug, Clone)]
pub struct MeshConnector {
    config: Arc<ClientConfig>,
}

impl MeshConnector {
    /// A connector presenting `tls`'s certificate and expecting the server
    /// to be `service`.
    ///
    /// # Errors
    /// [`ClientError::Tls`].
    pub fn new(tls: &Arc<MeshTls>, service: &str) -> Result<Self, ClientError> {
        Ok(Self::from_config(tls.client_config(service)?))
    }

    /// A connector with a TLS configuration of the caller's own (tests and
    /// tools that must present something other than a mesh identity).
    #[must_use]
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }
}

type ConnectFuture = Pin<
    Box<
        dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
    >,
>;

impl tower::Service<Uri> for MeshConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "endpoint without a host")
                })?
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // The verifier checks the SPIFFE id, not this name; it only has
            // to be well-formed for the handshake.
            let name = ServerName::try_from(host)
                .or_else(|_| ServerName::try_from("mesh.invalid"))
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A channel to one mesh service, for typed stubs
/// (`WalletServiceClient::new(channel)`).
///
/// It reports a call whose deadline passed on the client side as
/// DEADLINE_EXCEEDED, as the gRPC specification says, where tonic alone
/// reports CANCELLED.
#[derive(Debug, Clone)]
pub struct MeshChannel {
    inner: Channel,
}

type CallFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<tonic::body::Body>, tonic::transport::Error>>
            + Send,
    >,
>;

impl tower::Service<http::Request<tonic::body::Body>> for MeshChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            match call.await {
                Err(error) if deadline_passed(&error) => Ok(tonic::Status::deadline_exceeded(
                    "the call's deadline passed before the answer came",
                )
                .into_http()),
                other => other,
            }
        })
    }
}

/// Whether tonic gave up on a call because its `grpc-timeout` elapsed.
fn deadline_passed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(cause) = current {
        if cause.is::<tonic::TimeoutExpired>() {
            return true;
        }
        current = cause.source();
    }
    false
}

/// A lazily connected channel to `service` at `endpoint`, over mutual TLS.
///
/// # Errors
/// [`ClientError`].
pub fn mesh_channel(
    tls: &Arc<MeshTls>,
    service: &str,
    endpoint: &str,
) -> Result<MeshChannel, ClientError> {
    let connector = MeshConnector::new(tls, service)?;
    // TLS is the connector's job, so tonic sees a plain http:// URI.
    let authority = crate::mesh::endpoint_authority(endpoint)
        .ok_or_else(|| ClientError::Endpoint(endpoint.to_owned()))?;
    let uri = format!("http://{authority}");
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|_| ClientError::Endpoint(uri))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(MeshChannel {
        inner: endpoint.connect_with_connector_lazy(connector),
    })
}
