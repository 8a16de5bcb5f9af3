//! Safra's edge gateway: the one public port (`127.0.0.1:8080` by default),
//! generic over the contracts so that a new RPC needs no gateway code.
//!
//! One port, routed by content type:
//! - `application/grpc*`: native gRPC over h2c, proxied to the service over
//!   mutual TLS (streaming included) — see [`proxy`];
//! - `application/grpc-web*`: grpc-web over HTTP/1.1 or HTTP/2, translated
//!   to gRPC by tonic-web in front of the same proxy;
//! - anything else: REST/JSON transcoded from the `google.api.http`
//!   bindings (see [`routes`], [`transcode`] and [`rest`]).
//!
//! Before anything reaches a service the edge applies the contract's gate
//! (authorization and field rules, [`safra::contract::gate`]); `internal` methods are
//! never exposed. `/metrics` counts calls by RPC and status whatever the
//! protocol. `/openapi.json` and `/docs` describe the REST surface,
//! `/` serves the console ([`console`]), and `/healthz` and `/readyz`
//! report on the gateway and the mesh behind it.

mod codec;
mod console;
mod docs;
pub mod errors;
mod jobs;
mod listener;
pub mod openapi;
mod proxy;
mod ratelimit;
mod readiness;
pub mod reference;
mod rest;
pub mod routes;
pub mod transcode;
pub mod wire_json;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request},
    middleware::Next,
    response::Response,
    routing::get,
};
use http::{HeaderValue, header};
use prost_reflect::DescriptorPool;
use safra::{
    config::GatewayConfig,
    contract::gate::Gate,
    identity::auth::TokenVerifier,
    identity::tls::MeshTls,
    jobs::v1::jobs_service_server::JobsServiceServer,
    mesh::Service,
    transport::client::AccountsJwks,
    transport::client::{MeshChannel, mesh_channel},
};
use tokio::net::TcpListener;
use tracing::Instrument;

use listener::{ClientAddr, ConnectionMetrics};
pub use readiness::{Readiness, UpstreamState};
use safra::{
    config::{EdgeLimits, IpNet},
    transport::server::BodyBudget,
};

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
    /// The contracts cannot be routed.
    #[error("the contracts: {0}")]
    Contracts(String),
    /// Serving failed.
    #[error("the gateway failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// What the edge applies to every request.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// The largest REST body or gRPC message accepted, in bytes.
    pub max_body_bytes: usize,
    /// The deadline of a unary call whose client sets none.
    pub default_timeout: Duration,
    /// Requests per second each client address may make, in bursts of up
    /// to twice as many; 0 turns the limit off.
    pub rate_limit_rps: u32,
    /// Browser origins allowed to call the edge (CORS).
    pub cors_origins: Vec<String>,
    /// The build, for `safra_build_info` on `/metrics`.
    pub version: String,
    /// Bounds on connections, bodies and their timing, and the proxies
    /// whose `X-Forwarded-For` is believed.
    pub limits: EdgeLimits,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            default_timeout: Duration::from_secs(30),
            rate_limit_rps: 200,
            cors_origins: Vec::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            limits: EdgeLimits::default(),
        }
    }
}

/// What the edge serves from: the contracts, the gate, the routes and a
/// channel per upstream gRPC service.
#[derive(Debug)]
pub struct Edge {
    /// Safra's own contracts, which hold the google.rpc detail types that
    /// error bodies render (the served pool may be a test one).
    status_pool: DescriptorPool,
    gate: Arc<Gate>,
    routes: routes::Routes,
    /// Writes the services' answers as JSON, planned from the served pool.
    answers: Arc<wire_json::AnswerWriter>,
    upstreams: HashMap<String, MeshChannel>,
    settings: EdgeSettings,
    /// Each client address's request budget.
    limiter: ratelimit::RateLimiter,
    /// `/openapi.json`, generated once at start-up.
    openapi: bytes::Bytes,
    /// Server reflection (v1, v1alpha) over the exposed services.
    reflection: proxy::Reflection,
    /// Calls by RPC and status, whatever the protocol, with every
    /// defence's figures, for the admin port's `/metrics`.
    metrics: Arc<safra::observability::metrics::Metrics>,
    /// Request bodies being read, in all and per client.
    body_budget: Arc<BodyBudget>,
    /// The public port's connection figures.
    connections: ConnectionMetrics,
    /// What `/readyz` answers, refreshed in the background.
    readiness: Readiness,
}

impl Edge {
    /// The edge for the methods of `pool`, calling `upstreams` (by gRPC
    /// service full name, `safra.accounts.v1.AccountsService`).
    ///
    /// # Errors
    /// [`GatewayError::Contracts`] for a contract that cannot be routed.
    pub fn new(
        pool: &DescriptorPool,
        verifier: Arc<TokenVerifier>,
        upstreams: HashMap<String, MeshChannel>,
        settings: EdgeSettings,
    ) -> Result<Self, GatewayError> {
        let gate = Arc::new(
            Gate::new(pool, verifier)
                .map_err(|error| GatewayError::Contracts(error.to_string()))?,
        );
        let routes = routes::Routes::new(gate.policies())
            .map_err(|error| GatewayError::Contracts(error.to_string()))?;
        let status_pool = safra::contract::descriptor::pool()
            .map_err(|error| GatewayError::Contracts(error.to_string()))?;
        let document = openapi::document(&status_pool, &routes, env!("CARGO_PKG_VERSION"));
        let openapi = serde_json::to_vec_pretty(&document)
            .map_err(|error| GatewayError::Contracts(error.to_string()))?
            .into();
        let reflection = proxy::Reflection::new(pool, &gate)
            .map_err(|error| GatewayError::Contracts(error.to_string()))?;
        let exposed: Vec<String> = gate
            .policies()
            .filter(|(_, policy)| !policy.is_internal())
            .map(|(path, _)| path.to_owned())
            .collect();
        let mut metrics =
            safra::observability::metrics::Metrics::new("gateway", &settings.version, exposed);
        let limiter = ratelimit::RateLimiter::new(settings.rate_limit_rps);
        let connections = ConnectionMetrics::default();
        let registry = metrics.registry_mut();
        registry.register(
            "safra_gateway_rate_limited",
            "Requests refused by the rate limit, by the budget spent (address or user)",
            limiter.refused.clone(),
        );
        connections.register(registry);
        let body_budget = BodyBudget::new(
            settings.limits.body_budget_bytes,
            settings.limits.body_budget_per_client_bytes,
        );
        Ok(Self {
            status_pool,
            gate,
            routes,
            answers: Arc::new(wire_json::AnswerWriter::new(pool)),
            upstreams,
            limiter,
            settings,
            openapi,
            reflection,
            metrics: Arc::new(metrics),
            body_budget,
            connections,
            readiness: Readiness::default(),
        })
    }

    /// The edge whose `/readyz` reports `readiness`.
    #[must_use]
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Everything `/metrics` shows, in Prometheus text format.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// The channel to the service of `grpc_path` (`/<service>/<method>`).
    fn upstream(&self, grpc_path: &str) -> Option<MeshChannel> {
        let service = grpc_path.trim_start_matches('/').split('/').next()?;
        self.upstreams.get(service).cloned()
    }

    /// The OpenAPI document, as served at `/openapi.json`.
    #[must_use]
    pub fn openapi(&self) -> &[u8] {
        &self.openapi
    }
}

/// The router of the edge: every request first passes the per-address
/// rate limit; then fixed paths, then every other request by content type
/// to gRPC, grpc-web or REST.
pub fn router(edge: Arc<Edge>) -> Router {
    let grpc = proxy::grpc_stack(edge.clone());
    let openapi = edge.openapi.clone();
    let cors = cors_layer(&edge.settings.cors_origins);
    let readiness = edge.readiness.clone();
    let fallback_edge = edge.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                // The shared bytes, never a copy: a client that reads slowly
                // holds no memory of its own.
                let mut response = Response::new(Body::from(openapi.clone()));
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                std::future::ready(response)
            }),
        )
        .route("/docs", get(docs))
        .route("/healthz", get(readiness::healthz))
        .route(
            "/readyz",
            get(move || std::future::ready(readiness.report())),
        )
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .fallback(move |request: Request| {
            let edge = fallback_edge.clone();
            let grpc = grpc.clone();
            async move {
                if proxy::is_grpc(request.headers()) {
                    proxy::serve(&edge, grpc, request).await
                } else {
                    rest::serve(&edge, request).await
                }
            }
        })
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(edge, admit_client))
        .layer(axum::middleware::from_fn(traced))
}

/// Who the client is (the connection's peer, or the address a trusted
/// proxy forwarded), taken before anything else: the per-address rate
/// limit, then the request body charged to the client's share of the body
/// budget.
async fn admit_client(
    axum::extract::State(edge): axum::extract::State<Arc<Edge>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = client_of(&request, &edge.settings.limits.trusted_proxies);
    if let Some(client) = client {
        request.extensions_mut().insert(ClientIp(client));
    }
    if let Err(status) = edge.limiter.admit(client) {
        let grpc_call = proxy::is_grpc(request.headers());
        let parts = drain(request, &edge.settings).await;
        return if grpc_call {
            proxy::refuse(&status, &parts.headers)
        } else {
            errors::status_response(&edge.status_pool, &status)
        };
    }
    let budget = edge.body_budget.clone();
    let request = request.map(|body| Body::new(budget.wrap(client, body)));
    with_security_headers(next.run(request).await)
}

/// The client a request came from, as the edge sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) std::net::IpAddr);

/// The client of `request`: its connection's peer, unless the peer is one
/// of `trusted` proxies; then the nearest address in `X-Forwarded-For` that
/// is not itself a trusted proxy (what the proxies appended, right to left;
/// anything further left the client could have written).
fn client_of(request: &Request, trusted: &[IpNet]) -> Option<std::net::IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(addr))| addr.ip())?;
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut nearest = peer;
    for value in request.headers().get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(nearest);
        };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<std::net::IpAddr>() {
                Ok(ip) if is_trusted(ip) => nearest = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(nearest),
            }
        }
    }
    Some(nearest)
}

/// Content-Security-Policy and friends on the edge's own HTML (the console
/// and `/docs`): scripts and styles only from the edge itself (the docs
/// page's inline ones by hash), no framing, no content sniffing.
fn with_security_headers(mut response: Response) -> Response {
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|kind| kind.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if is_html {
        if let Ok(policy) = HeaderValue::from_str(&docs::content_security_policy()) {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// CORS for the configured browser origins: preflights answered here, and
/// the headers a grpc-web or REST client must read exposed.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};

    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    let header = |name: &'static str| http::HeaderName::from_static(name);
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            http::Method::GET,
            http::Method::HEAD,
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header("grpc-timeout"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("traceparent"),
            header("tracestate"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
            header("x-trace-id"),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(600))
}

/// A readable reference of the REST API, rendered in the browser from
/// `/openapi.json` by a page built into the binary (nothing from a CDN).
async fn docs() -> Response {
    let mut response = Response::new(Body::from(docs::PAGE));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Runs every request in a `gateway` span whose parent is the client's W3C
/// `traceparent`, and answers its trace id in `x-trace-id`.
async fn traced(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "gateway",
        otel.name = %request.uri().path(),
        otel.kind = "server",
        http.request.method = %request.method(),
    );
    safra::observability::telemetry::follow(&span, request.headers());
    let trace_id = span.in_scope(safra::observability::telemetry::current_trace_id);
    let mut response = next.run(request).instrument(span).await;
    if let Some(value) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-trace-id", value);
    }
    response
}

/// Reads and drops what is left of a refused HTTP/1.x request's body (up to
/// the size limit, within the body timeout), so that a client still
/// sending it receives the answer instead of a reset connection; HTTP/2
/// streams need no such care. Nothing read is kept.
async fn drain(request: Request, settings: &EdgeSettings) -> http::request::Parts {
    let (parts, body) = request.into_parts();
    if parts.version < http::Version::HTTP_2 {
        safra::transport::server::discard(
            body,
            settings.max_body_bytes,
            settings.limits.body_timeout,
        )
        .await;
    }
    parts
}

/// The client's address, as [`admit_client`] found it.
fn client_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ClientIp>()
        .map(|ClientIp(address)| *address)
}

/// The client's address as the services should see it (`x-forwarded-for`):
/// the peer of this connection, or the address a trusted proxy gave.
fn client_address(request: &Request) -> Option<HeaderValue> {
    client_ip(request).and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok())
}

/// The published descriptions of the production contracts, made without
/// serving anything (for `safra docs`): the OpenAPI document, as served at
/// `/openapi.json`, and the Markdown API reference of [`reference`].
///
/// # Errors
/// [`GatewayError::Contracts`] for contracts that cannot be routed.
pub fn documents(version: &str) -> Result<(Vec<u8>, String), GatewayError> {
    let pool = safra::contract::descriptor::pool()
        .map_err(|error| GatewayError::Contracts(error.to_string()))?;
    // Only the declarations are read; no token is ever verified here.
    let verifier = Arc::new(TokenVerifier::new(
        safra::identity::auth::DEFAULT_ISSUER,
        Arc::new(safra::identity::auth::StaticKeys(Arc::default())),
    ));
    let gate =
        Gate::new(&pool, verifier).map_err(|error| GatewayError::Contracts(error.to_string()))?;
    let routes = routes::Routes::new(gate.policies())
        .map_err(|error| GatewayError::Contracts(error.to_string()))?;
    let document = openapi::document(&pool, &routes, version);
    let openapi = serde_json::to_vec_pretty(&document)
        .map_err(|error| GatewayError::Contracts(error.to_string()))?;
    Ok((openapi, reference::markdown(&routes)))
}

/// Serves the gateway on `listener` until `shutdown` completes, then drains
/// in-flight requests. It calls the services over mutual TLS with `tls` (the
/// gateway's own certificate); its public port is plain HTTP.
///
/// # Errors
/// [`GatewayError`].
pub async fn serve(
    config: &GatewayConfig,
    version: &str,
    listener: TcpListener,
    tls: &Arc<MeshTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let mut channels = Vec::new();
    for (service, url) in &config.upstreams {
        let channel =
            mesh_channel(tls, service.name(), url).map_err(|error| GatewayError::Upstream {
                service: service.env_name(),
                url: url.clone(),
                reason: error.to_string(),
            })?;
        channels.push((*service, channel));
    }
    let accounts = channels
        .iter()
        .find(|(service, _)| *service == Service::Accounts)
        .map(|(_, channel)| channel.clone())
        .ok_or_else(|| GatewayError::Contracts("no accounts upstream".into()))?;
    let verifier = Arc::new(TokenVerifier::new(
        config.jwt_issuer.clone(),
        Arc::new(AccountsJwks::new(accounts)),
    ));
    let pool = safra::contract::descriptor::pool()
        .map_err(|error| GatewayError::Contracts(error.to_string()))?;
    let mut upstreams: HashMap<String, MeshChannel> = channels
        .iter()
        .map(|(service, channel)| (service.grpc_service().to_owned(), channel.clone()))
        .collect();
    // The jobs monitor merged across services, in this process behind a
    // loopback mTLS port of its own, reached like any upstream.
    let jobs = serve_jobs(tls, verifier.clone(), channels.clone()).await?;
    upstreams.insert(
        <JobsServiceServer<jobs::MergedJobs> as tonic::server::NamedService>::NAME.to_owned(),
        jobs,
    );
    let settings = EdgeSettings {
        rate_limit_rps: config.rate_limit_rps,
        cors_origins: config.cors_origins.clone(),
        version: version.to_owned(),
        limits: config.edge_limits.clone(),
        ..EdgeSettings::default()
    };
    let readiness = Readiness::watching(channels);
    let edge = Arc::new(
        Edge::new(&pool, verifier, upstreams, settings)?.with_readiness(readiness.clone()),
    );
    let admin = TcpListener::bind(config.admin_addr).await?;
    tracing::info!(addr = %config.admin_addr, "gateway admin (/metrics) serving");
    let metrics_edge = edge.clone();
    let admin_app = Router::new().route(
        "/metrics",
        get(move || std::future::ready(metrics_response(&metrics_edge))),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(admin, admin_app).await {
            tracing::error!(%error, "the gateway's admin port stopped");
        }
    });
    tokio::spawn(readiness.refresh_every(readiness::REFRESH_EVERY));
    serve_router(listener, edge, shutdown).await
}

/// `/metrics` of the admin port.
fn metrics_response(edge: &Edge) -> Response {
    let mut response = Response::new(Body::from(edge.render_metrics()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Starts the merged jobs monitor on a loopback port, served as the
/// gateway (its certificate, the contracts' rules), and returns the
/// channel the edge calls it through.
async fn serve_jobs(
    tls: &Arc<MeshTls>,
    verifier: Arc<TokenVerifier>,
    channels: Vec<(Service, MeshChannel)>,
) -> Result<MeshChannel, GatewayError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| GatewayError::Contracts(format!("the jobs monitor's port: {error}")))?;
    let address = listener
        .local_addr()
        .map_err(|error| GatewayError::Contracts(format!("the jobs monitor's port: {error}")))?;
    let server = safra::transport::server::MeshServer::named("gateway", tls.clone(), verifier)
        .map_err(|error| GatewayError::Contracts(error.to_string()))?
        .add_service(JobsServiceServer::new(jobs::MergedJobs::new(channels)));
    tokio::spawn(async move {
        if let Err(error) = server.serve(listener, &[], std::future::pending()).await {
            tracing::error!(%error, "the jobs monitor stopped");
        }
    });
    mesh_channel(tls, "gateway", &address.to_string()).map_err(|error| GatewayError::Upstream {
        service: "JOBS".into(),
        url: address.to_string(),
        reason: error.to_string(),
    })
}

/// Serves `edge` (HTTP/1.1 and h2c) on `listener` until `shutdown`
/// completes, within the edge's connection bounds and timeouts (see
/// [`listener`]).
///
/// # Errors
/// [`GatewayError::Serve`].
pub async fn serve_router(
    listener: TcpListener,
    edge: Arc<Edge>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let limits = edge.settings.limits.clone();
    let connections = edge.connections.clone();
    listener::serve(listener, router(edge), limits, connections, shutdown).await?;
    Ok(())
}

/// A plain response with `status` and a JSON body (the edge's own answers).
fn json_response(status: http::StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
