//! The one server builder every mesh process uses. [`MeshServer::serve`]
//! reads top to bottom as a request's path: mutual TLS on the connection,
//! HTTP/2 limits, a trace span continuing the caller's trace, request
//! metrics, the contract stage (authorization, then validation, from the
//! descriptors), then health, reflection or the service's own handler, on a
//! task of its own so that a caller who leaves does not cut it short.
//! Shutdown turns health NOT_SERVING and drains in-flight calls.

mod budget;
mod complete;
mod contract;
mod trace;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use prost_reflect::DescriptorPool;
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::Server,
};
use tonic_health::ServingStatus;

pub use self::{
    budget::{BodyBudget, BudgetExceeded, BudgetedBody, budget_exceeded, discard},
    contract::{BODY_READ_DEADLINE, ContractLayer, ContractService},
    trace::{TraceLayer, TraceService},
};
use crate::{
    contract as declarations,
    contract::descriptor,
    contract::validate::BadPattern,
    identity::auth::TokenVerifier,
    identity::tls::{self, MeshTls, TlsError},
    mesh::Service,
    observability::admin::{self, Check},
    observability::metrics::{Metrics, MetricsLayer},
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
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The contracts could not be read.
    #[error("the contracts cannot be read: {0}")]
    Contracts(String),
    /// A field rule's pattern does not compile.
    #[error(transparent)]
    Pattern(#[from] BadPattern),
    /// The reflection service could not read the descriptor set.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed while serving.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The admin HTTP server failed.
    #[error("the admin server failed: {0}")]
    Admin(std::io::Error),
}

/// The standard health service every server carries.
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

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

/// The limits every server applies, chosen for a service behind the
/// gateway; each is set explicitly rather than left to library defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request message (bytes); compressed requests are refused,
    /// so this bounds what a handler ever decodes.
    pub max_message_size: usize,
    /// How long one call may run before it fails DEADLINE_EXCEEDED, unless
    /// the caller's `grpc-timeout` is shorter.
    pub request_timeout: Duration,
    /// Concurrent calls per connection before new ones wait.
    pub concurrency_per_connection: usize,
    /// HTTP/2 streams a client may open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before they are accepted (the
    /// rapid-reset defence).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may reset for protocol errors before it closes the
    /// connection.
    pub max_local_error_reset_streams: usize,
    /// Largest header list a client may send.
    pub max_header_list_size: u32,
    /// How long draining may take at shutdown before connections are cut.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            concurrency_per_connection: 256,
            max_concurrent_streams: 256,
            max_pending_accept_reset_streams: 32,
            max_local_error_reset_streams: 256,
            max_header_list_size: 16 * 1024,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// A mesh server under construction: add the service's handlers, then serve.
pub struct MeshServer {
    name: String,
    tls: Arc<MeshTls>,
    verifier: Arc<TokenVerifier>,
    contracts: DescriptorPool,
    encoded_contracts: &'static [u8],
    routes: RoutesBuilder,
    served: Vec<&'static str>,
    limits: Limits,
    version: String,
    admin: Option<(TcpListener, Vec<(String, Check)>)>,
    /// Metrics the service registers itself (the jobs monitor's).
    extra_metrics: Vec<RegisterMetrics>,
}

/// Adds a service's own metrics to the registry `/metrics` serves.
type RegisterMetrics = Box<dyn FnOnce(&mut prometheus_client::registry::Registry) + Send>;

impl std::fmt::Debug for MeshServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshServer")
            .field("name", &self.name)
            .field("served", &self.served)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl MeshServer {
    /// A server for `service`, over `tls`, verifying tokens with `verifier`,
    /// enforcing the production contracts.
    ///
    /// # Errors
    /// [`ServeError::Contracts`] if the embedded descriptor set is unreadable.
    pub fn new(
        service: Service,
        tls: Arc<MeshTls>,
        verifier: Arc<TokenVerifier>,
    ) -> Result<Self, ServeError> {
        Self::named(service.name(), tls, verifier)
    }

    /// A server of the process `name` that is not a domain service (the
    /// gateway's own jobs monitor), otherwise as [`MeshServer::new`].
    ///
    /// # Errors
    /// [`ServeError::Contracts`] if the embedded descriptor set is unreadable.
    pub fn named(
        name: &str,
        tls: Arc<MeshTls>,
        verifier: Arc<TokenVerifier>,
    ) -> Result<Self, ServeError> {
        let contracts =
            descriptor::pool().map_err(|error| ServeError::Contracts(error.to_string()))?;
        Ok(Self {
            name: name.to_owned(),
            tls,
            verifier,
            contracts,
            encoded_contracts: descriptor::FILE_DESCRIPTOR_SET,
            routes: RoutesBuilder::default(),
            served: Vec::new(),
            limits: Limits::default(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            admin: None,
            extra_metrics: Vec::new(),
        })
    }

    /// Lets `register` add metrics of the service's own to those `/metrics`
    /// serves.
    #[must_use]
    pub fn with_metrics(
        mut self,
        register: impl FnOnce(&mut prometheus_client::registry::Registry) + Send + 'static,
    ) -> Self {
        self.extra_metrics.push(Box::new(register));
        self
    }

    /// The build version reported by `safra_build_info`.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` too;
    /// `/readyz` runs `checks`.
    #[must_use]
    pub fn with_admin(mut self, listener: TcpListener, checks: Vec<(String, Check)>) -> Self {
        self.admin = Some((listener, checks));
        self
    }

    /// Enforces and reflects other contracts (test contracts, for one).
    #[must_use]
    pub fn with_contracts(mut self, pool: DescriptorPool, encoded: &'static [u8]) -> Self {
        self.contracts = pool;
        self.encoded_contracts = encoded;
        self
    }

    /// Replaces the default limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds a generated service's server; its health is reported SERVING.
    #[must_use]
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.served.push(S::NAME);
        self
    }

    /// Serves on `listener` until `shutdown` completes; health then turns
    /// NOT_SERVING and in-flight calls drain for at most the drain timeout,
    /// after which the remaining connections are cut.
    ///
    /// # Errors
    /// [`ServeError`].
    pub async fn serve(
        self,
        listener: TcpListener,
        health_names: &[&str],
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stopping, stop_signal) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            stopping.send_replace(true);
        });
        let stopped = move || {
            let mut signal = stop_signal.clone();
            async move {
                // An error means the sender is gone, which also means stop.
                drop(signal.wait_for(|stop| *stop).await);
            }
        };

        // tls: only connections with a certificate from our CA get this far.
        let incoming = ReceiverStream::new(tls::accept(listener, self.tls.server_config()?))
            .map(Ok::<_, std::io::Error>);
        // metrics: every call counted, refused ones included.
        let mut metrics = Metrics::new(
            &self.name,
            &self.version,
            declarations::safra_methods(&self.contracts).map(|method| {
                format!("/{}/{}", method.parent_service().full_name(), method.name())
            }),
        );
        for register in self.extra_metrics {
            register(metrics.registry_mut());
        }
        let metrics = Arc::new(metrics);
        // contract: who may call and what they may send, from the descriptors.
        let contract = ContractLayer::new(
            &self.contracts,
            self.verifier.clone(),
            self.limits.max_message_size,
        )?;
        // health: per served contract, and the server as a whole ("").
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut names: Vec<&str> = self.served.clone();
        names.extend_from_slice(health_names);
        for name in &names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        // reflection: v1 and v1alpha (grpcurl builds here speak only v1alpha).
        // Health is described too, so grpcurl can call it by name.
        let mut reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(self.encoded_contracts)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(HEALTH_SERVICE);
        let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(self.encoded_contracts)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(HEALTH_SERVICE);
        for name in &names {
            reflection_v1 = reflection_v1.with_service_name(*name);
            reflection_v1alpha = reflection_v1alpha.with_service_name(*name);
        }
        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(reflection_v1.build_v1()?)
            .add_service(reflection_v1alpha.build_v1alpha()?);
        let routes: Routes = routes.routes();

        // admin: metrics and readiness over plain HTTP on its own port.
        if let Some((admin_listener, checks)) = self.admin {
            let metrics = metrics.clone();
            let stopped = stopped();
            tokio::spawn(async move {
                if let Err(error) = admin::serve(admin_listener, metrics, checks, stopped).await {
                    tracing::error!(%error, "the admin server stopped");
                }
            });
        }

        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let draining = drain_after(stopped(), health, names);
        let limits = self.limits;
        let server = Server::builder()
            .timeout(limits.request_timeout)
            .concurrency_limit_per_connection(limits.concurrency_per_connection)
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_pending_accept_reset_streams(Some(limits.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(limits.max_local_error_reset_streams))
            .http2_max_header_list_size(Some(limits.max_header_list_size))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            // trace: a server span per call, child of the caller's traceparent.
            .layer(TraceLayer)
            .layer(MetricsLayer::new(metrics))
            .layer(contract)
            // complete: a caller that leaves does not cut a handler short.
            .layer(complete::CompletionLayer)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, draining);
        // Draining is bounded: past the timeout, what is left is cut off.
        let deadline = {
            let stopped = stopped();
            async move {
                stopped.await;
                tokio::time::sleep(limits.drain_timeout).await;
            }
        };
        tokio::select! {
            served = server => served?,
            () = deadline => tracing::warn!("calls still running after the drain timeout were cut off"),
        }
        Ok(())
    }
}

/// Completes when `shutdown` does, after turning every name NOT_SERVING so
/// that load balancers stop sending new calls while old ones drain.
async fn drain_after(
    shutdown: impl Future<Output = ()>,
    health: tonic_health::server::HealthReporter,
    names: Vec<String>,
) {
    shutdown.await;
    for name in &names {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Serves `service`'s health and reflection on `listener`, over mutual TLS
/// with `tls`, until `shutdown` completes — what a service process runs
/// before its domain handlers exist.
///
/// # Errors
/// [`ServeError`].
pub async fn serve(
    service: Service,
    listener: TcpListener,
    tls: &Arc<MeshTls>,
    verifier: Arc<TokenVerifier>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    MeshServer::new(service, tls.clone(), verifier)?
        .serve(listener, &[service.grpc_service()], shutdown)
        .await
}
