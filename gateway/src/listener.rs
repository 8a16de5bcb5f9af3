//! The edge's public port: accepts connections within bounds (in all and
//! per client address), serves HTTP/1.1 and h2c on each with hyper, and
//! closes the ones that misbehave or linger:
//! - a request's headers must arrive within the header-read timeout (the
//!   first request's from the moment the connection opens);
//! - a connection with no request in flight for the idle timeout is closed;
//! - HTTP/2 connections are pinged and closed when a ping goes unanswered.
//!
//! Every accepted connection gets `TCP_NODELAY` and the mesh's write
//! coalescing ([`safra::transport::coalesce`]), so the answers of
//! concurrent HTTP/2 streams leave together, and its requests carry the
//! peer's address for the rate limit and `x-forwarded-for`.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use safra::{config::EdgeLimits, transport::coalesce::Coalesced};
use tokio::{net::TcpListener, sync::watch};

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Streams one HTTP/2 connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// How long connections may take to finish their requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The public port's connection figures, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    closed: Family<CloseLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CloseLabels {
    /// `header_read`, `idle`, `over_limit`, `over_client_limit` or `ended`.
    reason: &'static str,
}

impl ConnectionMetrics {
    /// Adds the figures to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "safra_gateway_connections_open",
            "Connections open on the public port",
            self.open.clone(),
        );
        registry.register(
            "safra_gateway_connections_closed",
            "Connections closed on the public port, by why: a timeout (header_read, idle), a bound (over_limit, over_client_limit) or the client or the request ending (ended)",
            self.closed.clone(),
        );
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&CloseLabels { reason }).inc();
    }
}

/// Open connections, in all and per client address.
#[derive(Debug, Default)]
struct Census {
    total: usize,
    clients: HashMap<IpAddr, usize>,
}

/// A connection counted in the [`Census`] until it is dropped.
struct Counted {
    census: Arc<Mutex<Census>>,
    client: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut census = self.census.lock().unwrap_or_else(PoisonError::into_inner);
        census.total = census.total.saturating_sub(1);
        if let Some(count) = census.clients.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                census.clients.remove(&self.client);
            }
        }
    }
}

/// Counts `client`'s new connection, or says which bound it is over.
fn admit(
    census: &Arc<Mutex<Census>>,
    limits: &EdgeLimits,
    client: IpAddr,
) -> Result<Counted, &'static str> {
    let mut counts = census.lock().unwrap_or_else(PoisonError::into_inner);
    if counts.total >= limits.max_connections {
        return Err("over_limit");
    }
    let mine = counts.clients.entry(client).or_insert(0);
    if *mine >= limits.max_connections_per_client {
        return Err("over_client_limit");
    }
    *mine += 1;
    counts.total += 1;
    Ok(Counted {
        census: census.clone(),
        client,
    })
}

/// What a connection's watchdog reads: requests in flight, and when the
/// last one started or ended (milliseconds since the connection opened).
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicUsize,
    last_change_ms: AtomicU64,
}

impl Activity {
    fn touch(&self, opened: Instant) {
        let elapsed = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(elapsed, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open
/// connections finish their requests (at most [`SHUTDOWN_GRACE`]).
///
/// # Errors
/// The listener's address cannot be read.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: EdgeLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.local_addr()?;
    let census = Arc::new(Mutex::new(Census::default()));
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive)
        .keep_alive_timeout(limits.keepalive)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let builder = Arc::new(builder);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly
                    // rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let counted = match admit(&census, &limits, addr.ip()) {
            Ok(counted) => counted,
            Err(reason) => {
                metrics.closed(reason);
                drop(tcp);
                continue;
            }
        };
        // Small answers must not wait for the peer's ACK; coalescing is
        // what batches them.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%addr, %error, "cannot set TCP_NODELAY");
        }
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            limits: limits.clone(),
            metrics: metrics.clone(),
            stopped: stopped.clone(),
        };
        tokio::spawn(connection.run(tcp, addr, counted));
    }
    drop(listener);
    stop.send_replace(true);
    // Wait for the connections to end, or for the grace to run out.
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while census.lock().unwrap_or_else(PoisonError::into_inner).total > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One accepted connection's settings.
struct Connection {
    builder: Arc<Builder<TokioExecutor>>,
    app: Router,
    limits: EdgeLimits,
    metrics: ConnectionMetrics,
    stopped: watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: tokio::net::TcpStream, addr: SocketAddr, counted: Counted) {
        let opened = Instant::now();
        let activity = Arc::new(Activity::default());
        self.metrics.open.inc();
        let service = Tracked {
            app: self.app.clone(),
            addr,
            activity: activity.clone(),
            opened,
        };
        let io = TokioIo::new(Coalesced::new(tcp));
        let builder = self.builder.clone();
        let mut connection =
            pin!(builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service)));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut closing: Option<&'static str> = None;
        loop {
            tokio::select! {
                _ = connection.as_mut() => break,
                changed = self.stopped.changed(), if closing.is_none() => {
                    if changed.is_err() || *self.stopped.borrow() {
                        connection.as_mut().graceful_shutdown();
                        closing = Some("ended");
                    }
                }
                _ = tick.tick(), if closing.is_none() => {
                    if let Some(reason) = self.overdue(&activity, opened) {
                        closing = Some(reason);
                        self.metrics.closed(reason);
                        // Nothing is in flight: end it now, not gracefully.
                        break;
                    }
                }
            }
        }
        if closing.is_none() {
            // hyper ends a connection itself when a request's headers are
            // late (the first request's or a kept-alive one's): quiet for
            // the header-read timeout with nothing in flight.
            let quiet = opened.elapsed().saturating_sub(Duration::from_millis(
                activity.last_change_ms.load(Ordering::Relaxed),
            ));
            let timed_out = activity.in_flight.load(Ordering::Relaxed) == 0
                && quiet >= self.limits.header_read_timeout;
            self.metrics
                .closed(if timed_out { "header_read" } else { "ended" });
        }
        self.metrics.open.dec();
        drop(counted);
    }

    /// Why the connection should close now, if it should: no request yet
    /// past the header-read timeout, or none in flight past the idle one.
    fn overdue(&self, activity: &Activity, opened: Instant) -> Option<&'static str> {
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        if activity.started.load(Ordering::Relaxed) == 0 {
            return (opened.elapsed() >= self.limits.header_read_timeout).then_some("header_read");
        }
        let since = Duration::from_millis(activity.last_change_ms.load(Ordering::Relaxed));
        (opened.elapsed().saturating_sub(since) >= self.limits.idle_timeout).then_some("idle")
    }
}

/// The app, seen from one connection: each request carries the peer's
/// address and counts as in flight until its response body ends.
#[derive(Clone)]
struct Tracked {
    app: Router,
    addr: SocketAddr,
    activity: Arc<Activity>,
    opened: Instant,
}

type TrackedFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<axum::body::Body>, std::convert::Infallible>>
            + Send,
    >,
>;

impl tower::Service<http::Request<hyper::body::Incoming>> for Tracked {
    type Response = http::Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = TrackedFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<hyper::body::Incoming>) -> Self::Future {
        request
            .extensions_mut()
            .insert(ConnectInfo(ClientAddr(self.addr)));
        let guard = InFlight::begin(self.activity.clone(), self.opened);
        let app = self.app.clone();
        Box::pin(async move {
            let response =
                tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await?;
            Ok(response.map(|body| {
                axum::body::Body::new(GuardedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A request in flight on its connection, until dropped.
struct InFlight {
    activity: Arc<Activity>,
    opened: Instant,
}

impl InFlight {
    fn begin(activity: Arc<Activity>, opened: Instant) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.touch(opened);
        Self { activity, opened }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch(self.opened);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted in flight until it ends
/// or is dropped (a stream stays in flight while it runs).
struct GuardedBody {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
