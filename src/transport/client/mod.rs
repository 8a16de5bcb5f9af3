//! Calling other mesh services: channels for typed stubs
//! (`WalletServiceClient::new(channel)`) over mutual TLS, the server checked
//! by its SPIFFE id.
//!
//! A [`MeshChannel`] balances over every endpoint of a service with the
//! power of two choices (the less busy of two picked at random), ejects an
//! endpoint that fails to connect for a while, and re-resolves `dns://`
//! endpoints (a Kubernetes headless Service) periodically. To each endpoint
//! it opens another HTTP/2 connection when its connections each carry
//! [`CALLS_PER_CONNECTION`] calls (long streams included), so one caller's
//! many streams never fill the connection everyone else's calls share, and
//! closes the extra ones once the load falls back. [`CallContext`]
//! carries the inbound call's deadline, user token and trace into outbound
//! calls; [`retry`] retries calls the contract declares idempotent, within a
//! budget.

mod context;
mod jwks;
pub mod retry;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::net::TcpStream;
use tonic::{
    body::Body,
    codegen::http::Uri,
    transport::{Channel, Endpoint},
};
use tower::ServiceExt;

pub use self::context::{CallContext, DEADLINE_MARGIN, parse_grpc_timeout};
pub use self::jwks::AccountsJwks;
use crate::{
    identity::tls::{MeshTls, TlsError},
    transport::coalesce::Coalesced,
};

/// How long establishing a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an endpoint that failed to connect is left out.
pub const EJECTION: Duration = Duration::from_secs(5);
/// How often `dns://` endpoints are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// Calls one connection carries before another is opened to the same
/// endpoint: well below the 256 streams a mesh server admits per
/// connection, so no call waits for a stream to free up.
pub const CALLS_PER_CONNECTION: usize = 100;
/// The most connections kept to one endpoint.
pub const MAX_CONNECTIONS_PER_ENDPOINT: usize = 16;

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An endpoint is not `host:port` (optionally behind `https://` or `dns://`).
    #[error(
        "'{0}' is not an endpoint like https://127.0.0.1:7003, wallet:7003 or dns://wallet:7003"
    )]
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
        dyn Future<
                Output = io::Result<TokioIo<Coalesced<tokio_rustls::client::TlsStream<TcpStream>>>>,
            > + Send,
    >,
>;

impl tower::Service<Uri> for MeshConnector {
    type Response = TokioIo<Coalesced<tokio_rustls::client::TlsStream<TcpStream>>>;
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
            Ok(TokioIo::new(Coalesced::new(stream)))
        })
    }
}

/// One endpoint of a service: its channel and how busy it is.
#[derive(Debug)]
struct Backend {
    authority: String,
    /// How to open another connection to it.
    endpoint: Endpoint,
    connector: MeshConnector,
    /// Its connections; the first is never closed.
    lanes: RwLock<Vec<Arc<Lane>>>,
    in_flight: AtomicUsize,
    ejected_until: RwLock<Option<Instant>>,
}

/// One HTTP/2 connection to an endpoint and the calls it carries.
#[derive(Debug)]
struct Lane {
    channel: Channel,
    in_flight: AtomicUsize,
}

impl Backend {
    fn open_lane(&self) -> Arc<Lane> {
        Arc::new(Lane {
            channel: self
                .endpoint
                .clone()
                .connect_with_connector_lazy(self.connector.clone()),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// The first connection with room for a call; a new one when all are
    /// full (up to the bound; then the least busy).
    fn lane(&self) -> Arc<Lane> {
        let has_room =
            |lane: &&Arc<Lane>| lane.in_flight.load(Ordering::Relaxed) < CALLS_PER_CONNECTION;
        if let Some(lane) = self
            .lanes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(has_room)
        {
            return lane.clone();
        }
        let mut lanes = self
            .lanes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lane) = lanes.iter().find(has_room) {
            return lane.clone();
        }
        if lanes.len() < MAX_CONNECTIONS_PER_ENDPOINT {
            let lane = self.open_lane();
            lanes.push(lane.clone());
            return lane;
        }
        match lanes
            .iter()
            .min_by_key(|lane| lane.in_flight.load(Ordering::Relaxed))
        {
            Some(lane) => lane.clone(),
            None => {
                let lane = self.open_lane();
                lanes.push(lane.clone());
                lane
            }
        }
    }

    /// Closes extra connections left with no call once the endpoint's load
    /// fits in half a connection (the margin keeps a load that hovers at
    /// the bound from opening and closing connections on every call).
    fn shed_idle_lanes(&self) {
        // The common case, one connection, costs a read lock and no more.
        if self.in_flight.load(Ordering::Relaxed) >= CALLS_PER_CONNECTION / 2
            || self.connections() <= 1
        {
            return;
        }
        let mut lanes = self
            .lanes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut index = 0;
        lanes.retain(|lane| {
            index += 1;
            index == 1 || lane.in_flight.load(Ordering::Relaxed) > 0
        });
    }

    /// Its open connections.
    fn connections(&self) -> usize {
        self.lanes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn available(&self, now: Instant) -> bool {
        self.ejected_until
            .read()
            .map(|until| until.is_none_or(|until| until <= now))
            .unwrap_or(true)
    }

    fn eject(&self) {
        if let Ok(mut until) = self.ejected_until.write() {
            *until = Some(Instant::now() + EJECTION);
        }
    }
}

#[derive(Debug)]
struct Backends {
    connector: MeshConnector,
    current: RwLock<Vec<Arc<Backend>>>,
}

impl Backends {
    /// Calls in flight over every current endpoint.
    fn in_flight(&self) -> usize {
        self.current.read().map_or(0, |current| {
            current
                .iter()
                .map(|backend| backend.in_flight.load(Ordering::Relaxed))
                .sum()
        })
    }

    fn backend(&self, authority: &str) -> Result<Arc<Backend>, ClientError> {
        // TLS is the connector's job, so tonic sees a plain http:// URI.
        let uri = format!("http://{authority}");
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|_| ClientError::Endpoint(uri))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let backend = Backend {
            authority: authority.to_owned(),
            endpoint,
            connector: self.connector.clone(),
            lanes: RwLock::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            ejected_until: RwLock::new(None),
        };
        let first = backend.open_lane();
        backend
            .lanes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(first);
        Ok(Arc::new(backend))
    }

    /// Replaces the set, keeping the backends (and their connections) of
    /// authorities that remain.
    fn replace(&self, authorities: &[String]) -> Result<(), ClientError> {
        let old = self.snapshot();
        let mut next = Vec::with_capacity(authorities.len());
        for authority in authorities {
            match old.iter().find(|backend| backend.authority == *authority) {
                Some(kept) => next.push(kept.clone()),
                None => next.push(self.backend(authority)?),
            }
        }
        if let Ok(mut current) = self.current.write() {
            *current = next;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<Arc<Backend>> {
        self.current
            .read()
            .map(|current| current.clone())
            .unwrap_or_default()
    }

    /// The power of two choices among the available backends (all of them
    /// when every one is ejected: better to try than to fail unasked).
    fn pick(&self) -> Option<Arc<Backend>> {
        // Read in place: this runs on every call, so it neither copies the
        // set nor allocates unless some backend is ejected.
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if current.iter().all(|backend| backend.available(now)) {
            return two_choices(&current).cloned();
        }
        let available: Vec<Arc<Backend>> = current
            .iter()
            .filter(|backend| backend.available(now))
            .cloned()
            .collect();
        if available.is_empty() {
            two_choices(&current).cloned()
        } else {
            two_choices(&available).cloned()
        }
    }
}

/// The less busy of two distinct backends picked at random.
fn two_choices(pool: &[Arc<Backend>]) -> Option<&Arc<Backend>> {
    match pool.len() {
        0 => None,
        1 => pool.first(),
        n => {
            let first = random_below(n);
            let mut second = random_below(n - 1);
            if second >= first {
                second += 1;
            }
            let (a, b) = (&pool[first], &pool[second]);
            if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
                Some(b)
            } else {
                Some(a)
            }
        }
    }
}

thread_local! {
    /// A xorshift state per thread, seeded from std's per-process random
    /// keys: load balancing needs spread, not secrecy, and a system call
    /// per pick showed in profiles.
    static PICKER: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::BuildHasher as _;
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1
    });
}

/// A uniformly spread index below `n` (n > 0).
fn random_below(n: usize) -> usize {
    let next = PICKER.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    usize::try_from(next % u64::try_from(n).unwrap_or(1)).unwrap_or(0)
}

/// A channel to one mesh service, for typed stubs, balanced over its
/// endpoints. Cheap to clone.
///
/// It reports a call whose deadline passed on the client side as
/// DEADLINE_EXCEEDED, as the gRPC specification says, where tonic alone
/// reports CANCELLED, and a service with no endpoint as UNAVAILABLE.
#[derive(Debug, Clone)]
pub struct MeshChannel {
    backends: Arc<Backends>,
}

type CallFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, tonic::transport::Error>> + Send>>;

impl tower::Service<http::Request<Body>> for MeshChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited per call, on the backend that call picks.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(backend) = self.backends.pick() else {
            return Box::pin(async {
                Ok(tonic::Status::unavailable("the service has no endpoint").into_http())
            });
        };
        let path = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.method = %path,
            server.address = %backend.authority,
        );
        span.in_scope(|| crate::observability::telemetry::inject(request.headers_mut()));
        let call = async move {
            // Counted busy until the answer's body ends or is dropped (a
            // stream stays counted while it runs), or until this future is
            // dropped before the answer came.
            let lane = backend.lane();
            let in_flight = InFlight::start(backend.clone(), lane.clone());
            let outcome = match lane.channel.clone().ready_oneshot().await {
                Ok(channel) => channel.oneshot(request).await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    Ok(http::Response::from_parts(
                        parts,
                        Body::new(CountedBody {
                            inner: body,
                            in_flight: Some(in_flight),
                        }),
                    ))
                }
                Err(error) if deadline_passed(&error) => Ok(tonic::Status::deadline_exceeded(
                    "the call's deadline passed before the answer came",
                )
                .into_http()),
                Err(error) => {
                    if cause_is::<tonic::ConnectError>(&error) {
                        backend.eject();
                    }
                    Err(error)
                }
            }
        };
        Box::pin(tracing::Instrument::instrument(call, span))
    }
}

impl MeshChannel {
    /// Calls in flight over this channel's endpoints: each counts from
    /// its start until its answer's body ends or is dropped, however the
    /// call ends. This is what the balancer compares.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.backends.in_flight()
    }

    /// HTTP/2 connections this channel holds open (or will open on first
    /// use), over all its endpoints.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.backends
            .snapshot()
            .iter()
            .map(|backend| backend.connections())
            .sum()
    }
}

/// One call counted on its backend and its connection until dropped.
struct InFlight {
    backend: Arc<Backend>,
    lane: Arc<Lane>,
}

impl InFlight {
    fn start(backend: Arc<Backend>, lane: Arc<Lane>) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { backend, lane }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.lane.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            // This connection just emptied: maybe it is no longer needed.
            self.backend.shed_idle_lanes();
        }
    }
}

/// An answer's body that keeps its call counted until it ends.
struct CountedBody {
    inner: Body,
    in_flight: Option<InFlight>,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // The call is over at its trailers (gRPC's last frame), at the
        // body's end, or at an error: whoever reads it may stop there.
        let over = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || this.inner.is_end_stream(),
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Pending => false,
        };
        if over {
            this.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn cause_is<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(cause) = current {
        if cause.is::<T>() {
            return true;
        }
        current = cause.source();
    }
    false
}

/// Whether tonic gave up on a call because its `grpc-timeout` elapsed.
fn deadline_passed(error: &(dyn std::error::Error + 'static)) -> bool {
    cause_is::<tonic::TimeoutExpired>(error)
}

/// The endpoints of a `SAFRA_<PEER>_URL` value: a comma-separated list of
/// `https://host:port`, `host:port` or `dns://host:port`.
///
/// # Errors
/// [`ClientError::Endpoint`] for an entry that is none of these.
pub fn parse_endpoints(value: &str) -> Result<Vec<EndpointSpec>, ClientError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.strip_prefix("dns://") {
            Some(name) => crate::mesh::endpoint_authority(name)
                .map(EndpointSpec::Dns)
                .ok_or_else(|| ClientError::Endpoint(entry.to_owned())),
            None => crate::mesh::endpoint_authority(entry)
                .map(EndpointSpec::Fixed)
                .ok_or_else(|| ClientError::Endpoint(entry.to_owned())),
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|specs| {
            if specs.is_empty() {
                Err(ClientError::Endpoint(value.to_owned()))
            } else {
                Ok(specs)
            }
        })
}

/// One configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// A fixed `host:port`.
    Fixed(String),
    /// A name re-resolved every [`RESOLVE_EVERY`], each address an endpoint.
    Dns(String),
}

/// A channel to `service` at `endpoints` (see [`parse_endpoints`]), over
/// mutual TLS. Nothing connects until the first call.
///
/// # Errors
/// [`ClientError`].
pub fn mesh_channel(
    tls: &Arc<MeshTls>,
    service: &str,
    endpoints: &str,
) -> Result<MeshChannel, ClientError> {
    let specs = parse_endpoints(endpoints)?;
    let backends = Arc::new(Backends {
        connector: MeshConnector::new(tls, service)?,
        current: RwLock::new(Vec::new()),
    });
    let fixed: Vec<String> = specs
        .iter()
        .filter_map(|spec| match spec {
            EndpointSpec::Fixed(authority) => Some(authority.clone()),
            EndpointSpec::Dns(_) => None,
        })
        .collect();
    backends.replace(&fixed)?;
    let names: Vec<String> = specs
        .into_iter()
        .filter_map(|spec| match spec {
            EndpointSpec::Dns(name) => Some(name),
            EndpointSpec::Fixed(_) => None,
        })
        .collect();
    if !names.is_empty() {
        spawn_resolver(Arc::downgrade(&backends), fixed, names);
    }
    Ok(MeshChannel { backends })
}

/// Keeps the backends of `dns://` names in step with what they resolve to,
/// for as long as the channel lives.
fn spawn_resolver(backends: std::sync::Weak<Backends>, fixed: Vec<String>, names: Vec<String>) {
    tokio::spawn(async move {
        loop {
            let mut authorities = fixed.clone();
            for name in &names {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addresses) => {
                        authorities
                            .extend(addresses.map(|address: SocketAddr| address.to_string()));
                    }
                    Err(error) => tracing::warn!(%name, %error, "cannot resolve endpoint"),
                }
            }
            authorities.sort();
            authorities.dedup();
            let Some(backends) = backends.upgrade() else {
                break;
            };
            if let Err(error) = backends.replace(&authorities) {
                tracing::warn!(%error, "cannot use resolved endpoints");
            }
            drop(backends);
            tokio::time::sleep(RESOLVE_EVERY).await;
        }
    });
}
