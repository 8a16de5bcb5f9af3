//! Native gRPC and grpc-web at the edge: the request passes the contract
//! stage (the same gate the services run: authorization, then field rules)
//! and is forwarded as it is to its service over mutual TLS, streams
//! included. tonic-web, in front, turns grpc-web (binary or base64 text,
//! HTTP/1.1 or HTTP/2) into gRPC and the answer back, trailers in the body.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{extract::Request, response::Response};
use http::{HeaderMap, HeaderValue, header};
use safra::{transport::client::MeshChannel, transport::server::ContractLayer};
use tonic::{Status, body::Body};
use tower::{Layer as _, Service, ServiceExt as _, util::BoxCloneSyncService};

use crate::{Edge, client_address};

/// The gRPC side of the edge, as one cloneable service.
pub type GrpcStack =
    BoxCloneSyncService<http::Request<axum::body::Body>, http::Response<Body>, Infallible>;

type GrpcService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Server reflection at the edge, v1 and v1alpha (grpcurl builds here speak
/// only v1alpha), listing the services that have public methods.
#[derive(Clone)]
pub struct Reflection {
    v1: GrpcService,
    v1alpha: GrpcService,
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reflection")
    }
}

impl Reflection {
    /// Reflection over the files of `pool`, naming the services of `gate`
    /// that have at least one method the edge exposes.
    ///
    /// # Errors
    /// The descriptors cannot be served.
    pub fn new(
        pool: &prost_reflect::DescriptorPool,
        gate: &safra::contract::gate::Gate,
    ) -> Result<Self, tonic_reflection::server::Error> {
        let files = prost_types::FileDescriptorSet {
            file: pool.file_descriptor_protos().cloned().collect(),
        };
        let mut names: Vec<String> = gate
            .policies()
            .filter(|(_, policy)| !policy.is_internal())
            .map(|(_, policy)| policy.method.parent_service().full_name().to_owned())
            .collect();
        names.sort();
        names.dedup();
        let builder = || {
            names.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_file_descriptor_set(files.clone()),
                |builder, name| builder.with_service_name(name.clone()),
            )
        };
        Ok(Self {
            v1: BoxCloneSyncService::new(builder().build_v1()?),
            v1alpha: BoxCloneSyncService::new(builder().build_v1alpha()?),
        })
    }

    fn service_for(&self, path: &str) -> Option<GrpcService> {
        if path.starts_with("/grpc.reflection.v1.ServerReflection/") {
            Some(self.v1.clone())
        } else if path.starts_with("/grpc.reflection.v1alpha.ServerReflection/") {
            Some(self.v1alpha.clone())
        } else {
            None
        }
    }
}

/// Whether a request speaks gRPC or grpc-web (by its content type).
#[must_use]
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// grpc-web translation, then metrics, the contract stage and the forwarder.
pub fn grpc_stack(edge: Arc<Edge>) -> GrpcStack {
    let contract = ContractLayer::with_gate(edge.gate.clone(), edge.settings.max_body_bytes)
        .with_body_deadline(edge.settings.limits.body_timeout);
    let metrics = safra::observability::metrics::MetricsLayer::new(edge.metrics.clone());
    let stack =
        tonic_web::GrpcWebLayer::new().layer(metrics.layer(contract.layer(Forward { edge })));
    BoxCloneSyncService::new(stack)
}

/// Serves one gRPC or grpc-web request. Methods the contracts do not
/// expose (unknown, or internal to the mesh) are UNIMPLEMENTED, as if they
/// did not exist.
pub async fn serve(edge: &Edge, stack: GrpcStack, mut request: Request) -> Response {
    let path = request.uri().path();
    if let Some(reflection) = edge.reflection.service_for(path) {
        let response = match reflection.oneshot(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        return response.map(axum::body::Body::new);
    }
    let Some(policy) = edge
        .gate
        .policy(path)
        .filter(|policy| !policy.is_internal())
    else {
        let status = Status::unimplemented(format!("no public method '{path}'"));
        let parts = crate::drain(request, &edge.settings).await;
        return refuse(&status, &parts.headers);
    };
    // Unary calls without a deadline get the edge's default one.
    if !policy.method.is_server_streaming() && !request.headers().contains_key("grpc-timeout") {
        let millis = edge.settings.default_timeout.as_millis();
        if let Ok(value) = HeaderValue::from_str(&format!("{millis}m")) {
            request.headers_mut().insert("grpc-timeout", value);
        }
    }
    match client_address(&request) {
        Some(address) => {
            request.headers_mut().insert("x-forwarded-for", address);
        }
        None => {
            request.headers_mut().remove("x-forwarded-for");
        }
    }
    let response = match stack.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    response.map(axum::body::Body::new)
}

/// `status` as a gRPC (or grpc-web) answer to a request with `headers`
/// that the edge refuses before routing it.
#[must_use]
pub fn refuse(status: &Status, headers: &HeaderMap) -> Response {
    grpc_web_aware(status.clone().into_http(), headers)
}

/// A trailers-only gRPC answer, which tonic-web would translate for a
/// grpc-web client; here the request never reached it, so mark the type.
fn grpc_web_aware(response: http::Response<Body>, request: &HeaderMap) -> Response {
    let mut response = response.map(axum::body::Body::new);
    if let Some(kind) = request
        .get(header::CONTENT_TYPE)
        .filter(|value| value.as_bytes().starts_with(b"application/grpc-web"))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, kind.clone());
    }
    response
}

/// Forwards a gRPC request to the channel of its service.
#[derive(Debug, Clone)]
struct Forward {
    edge: Arc<Edge>,
}

type ForwardFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl Service<http::Request<Body>> for Forward {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let channel: Option<MeshChannel> = self.edge.upstream(request.uri().path());
        // The contract stage verified the token: a signed-in caller spends
        // their own budget too.
        let over_budget = request
            .extensions()
            .get::<safra::identity::auth::AuthenticatedUser>()
            .and_then(|user| self.edge.limiter.admit_user(&user.user_id).err());
        Box::pin(async move {
            if let Some(status) = over_budget {
                return Ok(status.into_http());
            }
            let Some(mut channel) = channel else {
                return Ok(Status::unimplemented("this service is not deployed here").into_http());
            };
            // Hop-by-hop headers end here; the channel sets its own authority.
            for name in [header::HOST, header::CONNECTION, header::UPGRADE] {
                request.headers_mut().remove(name);
            }
            // The edge's span is the parent of the next hop.
            request.headers_mut().remove("traceparent");
            request.headers_mut().remove("tracestate");
            match channel.call(request).await {
                Ok(response) => Ok(response),
                Err(error) => Ok(Status::unavailable(format!(
                    "the service cannot be reached: {error}"
                ))
                .into_http()),
            }
        })
    }
}
