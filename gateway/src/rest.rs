//! REST/JSON at the edge: route by the bindings, build the request message,
//! pass the gate, call the service with a generic client, answer canonical
//! JSON — or, for server streaming, newline-delimited JSON or Server-Sent
//! Events. Every failure is a gRPC status rendered by [`crate::errors`].

use std::time::Duration;

use axum::{body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use safra::{
    contract::gate::authorize,
    contract::status::{self, Violation},
    observability::metrics::Observed,
    options::v1::CacheVisibility,
    transport::server::budget_exceeded,
    r#type::v1::ErrorReason,
};
use tokio_stream::StreamExt as _;
use tonic::{Code, Status, codegen::http::uri::PathAndQuery};

use crate::{
    Edge, EdgeSettings, client_address,
    codec::DynamicCodec,
    drain,
    errors::{self, bad_request},
    json_response,
    routes::{Route, Routed},
    transcode::{self, DuplicateField, RequestError, RequestParts},
};

/// Serves one REST request.
pub async fn serve(edge: &Edge, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let (route, variables) = match edge.routes.find(request.method(), &path) {
        Routed::Found(route, variables) => (route, variables),
        Routed::WrongMethod(allowed) => {
            drain(request, &edge.settings).await;
            return errors::wrong_method(&edge.status_pool, &allowed);
        }
        Routed::NotFound => {
            drain(request, &edge.settings).await;
            return errors::not_found(&edge.status_pool, &path);
        }
    };
    let observed = edge.metrics.begin(&route.grpc_path);
    match call(edge, route, &variables, request).await {
        Ok(Answer::Unary(response)) => {
            observed.finish(Code::Ok);
            response
        }
        Ok(Answer::Stream(stream, events)) => stream_response(
            edge.status_pool.clone(),
            edge.answers.clone(),
            stream,
            route.policy.method.output(),
            route.binding.response_body.clone(),
            events,
            observed,
        ),
        Err(status) => {
            observed.finish(status.code());
            errors::status_response(&edge.status_pool, &status)
        }
    }
}

/// What a call answered: a whole response, or a stream to relay (and
/// whether the client asked for Server-Sent Events).
enum Answer {
    Unary(Response),
    Stream(tonic::Streaming<Bytes>, bool),
}

async fn call(
    edge: &Edge,
    route: &Route,
    variables: &[(String, String)],
    request: Request,
) -> Result<Answer, Status> {
    let address = client_address(&request);
    // Who may call is known from the headers: a refused call costs no body
    // (an HTTP/1.1 client still sending one has it read and dropped).
    if let Err(status) = authenticate(edge, route, request.headers()).await {
        drain(request, &edge.settings).await;
        return Err(status);
    }
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let body = if route.binding.body.is_empty() {
        Bytes::new()
    } else {
        read_body(&parts.headers, body, &edge.settings).await?
    };
    let message = transcode::request_message(
        &route.policy.input,
        &RequestParts {
            body_field: &route.binding.body,
            body: &body,
            path: variables,
            query: parts.uri.query(),
        },
    )
    .map_err(|problem| match problem {
        RequestError::Duplicate(DuplicateField(field)) => status::invalid_argument(&[Violation {
            field,
            description: "is given more than once".into(),
            reason: "DUPLICATE",
        }]),
        RequestError::Invalid(problem) => bad_request(problem.0),
    })?;
    // The field rules, as the service will apply them: nothing invalid goes further.
    edge.gate.validate(&message)?;

    let channel = edge
        .upstream(&route.grpc_path)
        .ok_or_else(|| Status::unimplemented("this service is not deployed here"))?;
    let mut outbound = tonic::Request::new(message);
    let metadata = outbound.metadata_mut();
    if let Some(value) = authorization.and_then(|value| value.parse().ok()) {
        metadata.insert("authorization", value);
    }
    if let Some(value) = address.and_then(|value| value.to_str().ok().and_then(|v| v.parse().ok()))
    {
        metadata.insert("x-forwarded-for", value);
    }
    let streaming = route.policy.method.is_server_streaming();
    if let Some(timeout) = timeout(&parts.headers, streaming, edge.settings.default_timeout) {
        outbound.set_timeout(timeout);
    }
    let grpc_path = PathAndQuery::try_from(route.grpc_path.as_str())
        .map_err(|_| Status::internal("a route names a bad gRPC path"))?;
    let codec = DynamicCodec;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|error| Status::unavailable(format!("the service cannot be reached: {error}")))?;

    if streaming {
        let stream = client
            .server_streaming(outbound, grpc_path, codec)
            .await?
            .into_inner();
        return Ok(Answer::Stream(stream, wants_events(&parts.headers)));
    }
    let answer = client.unary(outbound, grpc_path, codec).await?.into_inner();
    let json = transcode::answer_json(
        &edge.answers,
        &route.policy.method.output(),
        &answer,
        &route.binding.response_body,
    )
    .map_err(|problem| status::internal(&problem))?;
    let mut response = json_response(StatusCode::OK, json);
    if let Some(cache) = safra::contract::http_cache(&route.policy.method) {
        let visibility = match cache.visibility() {
            CacheVisibility::Public => "public",
            _ => "private",
        };
        let value = format!("{visibility}, max-age={}", cache.max_age_seconds.max(0));
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    } else {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(Answer::Unary(response))
}

/// The caller, from the bearer token, if the route's method lets them call;
/// a signed-in caller then spends their own rate-limit budget.
async fn authenticate(edge: &Edge, route: &Route, headers: &HeaderMap) -> Result<(), Status> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(value) => Some(value.to_str().map_err(|_| {
            status::unauthenticated(
                ErrorReason::TokenInvalid,
                "the authorization header is not text",
            )
        })?),
        None => None,
    };
    let user = edge.gate.authenticate(authorization).await?;
    authorize(&route.policy.authorization, user.as_ref(), None)?;
    match user {
        Some(user) => edge.limiter.admit_user(&user.user_id),
        None => Ok(()),
    }
}

/// The JSON body, bounded in size and time and by the body budget; only
/// JSON (or no declared type) is accepted.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    settings: &EdgeSettings,
) -> Result<Bytes, Status> {
    let limit = settings.max_body_bytes;
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default();
        let essence = kind.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(status::with_reason(
                Code::InvalidArgument,
                ErrorReason::UnsupportedMediaType,
                format!("the body must be application/json, not '{kind}'"),
                Vec::new(),
            ));
        }
    }
    let deadline = settings.limits.body_timeout;
    tokio::time::timeout(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the body did not arrive within {} s",
                deadline.as_secs()
            ))
        })?
        .map(http_body_util::Collected::to_bytes)
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                return status::with_reason(
                    Code::ResourceExhausted,
                    ErrorReason::RequestTooLarge,
                    format!("the body is larger than {limit} bytes"),
                    Vec::new(),
                );
            }
            match budget_exceeded(&*error) {
                Some(exceeded) => status::with_reason(
                    Code::ResourceExhausted,
                    ErrorReason::RateLimited,
                    exceeded.to_string(),
                    Vec::new(),
                ),
                None => Status::cancelled("the body could not be read"),
            }
        })
}

/// The call's deadline: the client's `grpc-timeout`, else the default for
/// unary calls; a stream lasts as long as the client stays.
fn timeout(headers: &HeaderMap, streaming: bool, default: Duration) -> Option<Duration> {
    headers
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(safra::transport::client::parse_grpc_timeout)
        .or((!streaming).then_some(default))
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// A server stream as NDJSON (a final `{"error": ...}` line on failure) or
/// as Server-Sent Events (`event: error` on failure).
fn stream_response(
    pool: prost_reflect::DescriptorPool,
    answers: std::sync::Arc<crate::wire_json::AnswerWriter>,
    stream: tonic::Streaming<Bytes>,
    output: prost_reflect::MessageDescriptor,
    response_body: String,
    events: bool,
    observed: Observed,
) -> Response {
    // Recorded when the stream ends: with its error, or OK after the last
    // message; a client that leaves first counts as CANCELLED.
    let observed = std::sync::Arc::new(std::sync::Mutex::new(Some(observed)));
    let finish = move |code: Code| {
        if let Some(observed) = observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            observed.finish(code);
        }
    };
    let on_error = finish.clone();
    let lines = stream.map(move |item| {
        if let Err(status) = &item {
            on_error(status.code());
        }
        let (json, failed) = match item {
            Ok(wire) => match transcode::answer_json(&answers, &output, &wire, &response_body) {
                Ok(json) => (json, false),
                Err(problem) => (status_line(&pool, &status::internal(&problem)), true),
            },
            Err(status) => (status_line(&pool, &status), true),
        };
        let mut frame = Vec::with_capacity(json.len() + 24);
        if events {
            if failed {
                frame.extend_from_slice(b"event: error\n");
            }
            frame.extend_from_slice(b"data: ");
            frame.extend_from_slice(&json);
            frame.extend_from_slice(b"\n\n");
        } else if failed {
            frame.extend_from_slice(b"{\"error\":");
            frame.extend_from_slice(&json);
            frame.extend_from_slice(b"}\n");
        } else {
            frame.extend_from_slice(&json);
            frame.push(b'\n');
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(frame))
    });
    let end = tokio_stream::iter(std::iter::once_with(move || {
        finish(Code::Ok);
        Ok(Bytes::new())
    }));
    let mut response = Response::new(Body::from_stream(lines.chain(end)));
    let kind = if events {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn status_line(pool: &prost_reflect::DescriptorPool, status: &Status) -> Vec<u8> {
    serde_json::to_vec(&errors::status_json(pool, status)).unwrap_or_default()
}
