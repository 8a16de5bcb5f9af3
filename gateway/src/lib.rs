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

use listener::{ClientAddr, EdgeListener};
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
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            default_timeout: Duration::from_secs(30),
            rate_limit_rps: 200,
            cors_origins: Vec::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
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
    upstreams: HashMap<String, MeshChannel>,
    settings: EdgeSettings,
    /// Each client address's request budget.
    limiter: ratelimit::RateLimiter,
    /// `/openapi.json`, generated once at start-up.
    openapi: bytes::Bytes,
    /// Server reflection (v1, v1alpha) over the exposed services.
    reflection: proxy::Reflection,
    /// Calls by RPC and status, whatever the protocol, for `/metrics`.
    metrics: Arc<safra::observability::metrics::Metrics>,
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
        let metrics = Arc::new(safra::observability::metrics::Metrics::new(
            "gateway",
            &settings.version,
            exposed,
        ));
        Ok(Self {
            status_pool,
            gate,
            routes,
            upstreams,
            limiter: ratelimit::RateLimiter::new(settings.rate_limit_rps),
            settings,
            openapi,
            reflection,
            metrics,
        })
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

/// The router of the edge: fixed paths first, then every other request by
/// content type to gRPC, grpc-web or REST.
pub fn router(edge: Arc<Edge>) -> Router {
    let grpc = proxy::grpc_stack(edge.clone());
    let openapi = edge.openapi.clone();
    let cors = cors_layer(&edge.settings.cors_origins);
    let metrics = edge.metrics.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move {
                    let mut response = json_response(http::StatusCode::OK, openapi.to_vec());
                    response
                        .headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    response
                }
            }),
        )
        .route("/docs", get(docs))
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move {
                    let mut response = Response::new(Body::from(text));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    response
                }
            }),
        )
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
        .fallback(move |request: Request| {
            let edge = edge.clone();
            let grpc = grpc.clone();
            async move {
                let grpc_call = proxy::is_grpc(request.headers());
                if let Err(status) = edge.limiter.admit(client_ip(&request)) {
                    let parts = drain(request, edge.settings.max_body_bytes).await;
                    return if grpc_call {
                        proxy::refuse(&status, &parts.headers)
                    } else {
                        errors::status_response(&edge.status_pool, &status)
                    };
                }
                if grpc_call {
                    proxy::serve(&edge, grpc, request).await
                } else {
                    rest::serve(&edge, request).await
                }
            }
        })
        .layer(cors)
        .layer(axum::middleware::from_fn(traced))
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
    let mut response = Response::new(Body::from(include_str!("docs.html")));
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
/// `limit` bytes), so that a client still sending it receives the answer
/// instead of a reset connection; HTTP/2 streams need no such care.
async fn drain(request: Request, limit: usize) -> http::request::Parts {
    use http_body_util::BodyExt as _;

    let (parts, body) = request.into_parts();
    if parts.version < http::Version::HTTP_2 {
        drop(http_body_util::Limited::new(body, limit).collect().await);
    }
    parts
}

/// The peer address of the connection a request came on.
fn client_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(addr))| addr.ip())
}

/// The client's address as the services should see it: the peer of this
/// connection (a value the client sent is never trusted).
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
        ..EdgeSettings::default()
    };
    let edge = Arc::new(Edge::new(&pool, verifier, upstreams, settings)?);
    let readiness = Readiness::from_channels(channels);
    let app = Router::new()
        .route("/healthz", get(readiness::healthz))
        .route("/readyz", get(readiness::readyz))
        .with_state(readiness)
        .merge(router(edge));
    serve_router(listener, app, shutdown).await
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

/// Serves `app` (HTTP/1.1 and h2c) on `listener` until `shutdown`
/// completes; each connection coalesces its writes and its peer address is
/// known to the handlers.
///
/// # Errors
/// [`GatewayError::Serve`].
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    axum::serve(
        EdgeListener(listener),
        app.into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
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
