//! The edge gateway over a real mesh: an echo server and the mirroring
//! transcoding server (`proto-test/`) behind mutual TLS, the accounts
//! stand-in publishing the signing key, and the gateway's router on a
//! loopback port, called over HTTP/1.1 (REST, grpc-web) and h2c (gRPC).

use std::{
    collections::HashMap, net::SocketAddr, sync::Arc, sync::atomic::Ordering, time::Duration,
};

use base64::Engine as _;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use safra::{
    testing::echo::v1::{
        AdminEchoRequest, EchoRequest, EchoResponse, InternalEchoRequest, StreamEchoRequest,
        echo_service_client::EchoServiceClient,
    },
    transport::server::Limits,
};
use safra_gateway::{Edge, EdgeSettings};
use serde_json::{Value, json};
use tonic::Code;

use crate::runtime::{Mesh, reason, spawn_mesh, with_token};

pub(crate) struct Gateway {
    pub(crate) addr: SocketAddr,
    pub(crate) mesh: Mesh,
    pub(crate) edge: Arc<Edge>,
}

pub(crate) const BODY_LIMIT: usize = 16 * 1024;

async fn spawn_gateway() -> Gateway {
    spawn_gateway_with(EdgeSettings {
        max_body_bytes: BODY_LIMIT,
        default_timeout: Duration::from_secs(10),
        rate_limit_rps: 0,
        cors_origins: vec!["http://console.test".into()],
        ..EdgeSettings::default()
    })
    .await
}

pub(crate) async fn spawn_gateway_with(settings: EdgeSettings) -> Gateway {
    let mesh = spawn_mesh(Limits::default()).await;
    let channel = safra::transport::client::mesh_channel(
        &mesh.pki.tls("gateway"),
        "wallet",
        &mesh.echo.to_string(),
    )
    .expect("channel");
    let upstreams = HashMap::from([
        ("safra.echo.v1.EchoService".to_owned(), channel.clone()),
        ("safra.transcode.v1.TranscodeService".to_owned(), channel),
    ]);
    let edge = Edge::new(
        &safra::testing::pool().expect("test contracts"),
        mesh.verifier.clone(),
        upstreams,
        settings,
    )
    .expect("edge");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let edge = Arc::new(edge);
    tokio::spawn(safra_gateway::serve_router(
        listener,
        edge.clone(),
        std::future::pending(),
    ));
    Gateway { addr, mesh, edge }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }
}

impl Gateway {
    /// One HTTP/1.1 request on its own connection.
    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.http("GET", path, &[], b"").await
    }

    async fn send_json(&self, method: &str, path: &str, body: &Value) -> Answer {
        self.http(
            method,
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
    }
}

fn error_reason(answer: &Answer) -> String {
    answer.json()["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|detail| detail["reason"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn rest_bindings_fill_the_request_from_path_query_and_body() {
    let gateway = spawn_gateway().await;

    let answer = gateway
        .get(
            "/v1/shelves/a%20b?labels=x&labels=y&size=SIZE_LARGE&capacity=9007199254740993\
             &archived=true&slots=1&slots=2&location.room=r1&displayName=Ana\
             &create_time=2026-11-30T10:00:00Z",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(
        answer.json(),
        json!({
            "name": "a b",
            "location": {"room": "r1", "row": 0},
            "labels": ["x", "y"],
            "size": "SIZE_LARGE",
            "capacity": "9007199254740993",
            "archived": true,
            "slots": [1, 2],
            "createTime": "2026-11-30T10:00:00Z",
            "displayName": "Ana",
        })
    );
    assert_eq!(answer.header("cache-control"), "no-store");

    // Enums by number, the additional binding with a nested variable.
    let answer = gateway.get("/v1/rooms/kitchen/shelves/s2?size=1").await;
    assert_eq!(answer.json()["location"]["room"], "kitchen");
    assert_eq!(answer.json()["name"], "s2");
    assert_eq!(answer.json()["size"], "SIZE_SMALL");

    // A literal segment beats a variable, and its caching is declared.
    let answer = gateway.get("/v1/shelves/featured").await;
    assert_eq!(answer.json()["name"], "", "GetFeaturedShelf, not GetShelf");
    assert_eq!(answer.header("cache-control"), "public, max-age=60");

    // The whole body, JSON or proto names.
    let answer = gateway
        .send_json(
            "POST",
            "/v1/shelves",
            &json!({"name": "n", "location": {"room": "x", "row": 3}, "display_name": "D"}),
        )
        .await;
    assert_eq!(answer.json()["location"], json!({"room": "x", "row": 3}));
    assert_eq!(answer.json()["displayName"], "D");

    // One field from the body, the rest from the path and the query.
    let answer = gateway
        .send_json(
            "PATCH",
            "/v1/shelves/s1/location?labels=z",
            &json!({"room": "k"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let shelf = answer.json();
    assert_eq!(
        (&shelf["name"], &shelf["location"]["room"], &shelf["labels"]),
        (&json!("s1"), &json!("k"), &json!(["z"]))
    );

    // A custom verb; the path variable wins over the body.
    let answer = gateway
        .send_json(
            "POST",
            "/v1/shelves/s1:archive",
            &json!({"name": "other", "archived": true}),
        )
        .await;
    assert_eq!(
        (&answer.json()["name"], &answer.json()["archived"]),
        (&json!("s1"), &json!(true))
    );

    // response_body: only that field.
    let answer = gateway
        .get("/v1/shelves/s1/location?location.room=q&location.row=4")
        .await;
    assert_eq!(answer.json(), json!({"room": "q", "row": 4}));

    let answer = gateway.http("DELETE", "/v1/shelves/s9", &[], b"").await;
    assert_eq!(answer.json()["name"], "s9");
}

#[tokio::test]
async fn rest_errors_are_json_with_the_right_http_status() {
    let gateway = spawn_gateway().await;

    let unknown = gateway.get("/v1/nowhere").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["code"], 5);
    assert_eq!(error_reason(&unknown), "ROUTE_NOT_FOUND");

    let wrong = gateway.http("PUT", "/v1/shelves/s1", &[], b"").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), "DELETE, GET");
    assert_eq!(error_reason(&wrong), "METHOD_NOT_ALLOWED");

    for (body, expected) in [
        (&b"{"[..], "not valid JSON"),
        (br#"{"nope": 1}"#, "nope"),
        (br#"{"capacity": "lots"}"#, ""),
        (br#"{"archived": "yes"}"#, ""),
    ] {
        let answer = gateway
            .http(
                "POST",
                "/v1/shelves",
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(answer.json()["code"], 3);
        let message = answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(expected), "{message}");
    }

    let query = gateway.get("/v1/shelves/s1?colour=red").await;
    assert_eq!(query.status, StatusCode::BAD_REQUEST);
    assert!(
        query.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("colour")
    );

    let typed = gateway.get("/v1/shelves/s1?archived=maybe").await;
    assert_eq!(typed.status, StatusCode::BAD_REQUEST);

    let media = gateway
        .http(
            "POST",
            "/v1/shelves",
            &[("content-type", "text/plain")],
            b"{}",
        )
        .await;
    assert_eq!(media.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let large = vec![b' '; BODY_LIMIT + 1];
    let too_large = gateway
        .http(
            "POST",
            "/v1/shelves",
            &[("content-type", "application/json")],
            &large,
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_reason(&too_large), "REQUEST_TOO_LARGE");

    // Statuses from the service map to their HTTP statuses.
    for (code, http) in [
        (5, StatusCode::NOT_FOUND),
        (6, StatusCode::CONFLICT),
        (9, StatusCode::BAD_REQUEST),
        (14, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let answer = gateway
            .send_json(
                "POST",
                "/v1/shelves:fail",
                &json!({"code": code, "message": "m"}),
            )
            .await;
        assert_eq!(answer.status, http, "code {code}");
        assert_eq!(answer.json()["code"], code);
        assert_eq!(answer.json()["message"], "m");
    }
    let exhausted = gateway
        .send_json(
            "POST",
            "/v1/shelves:fail",
            &json!({"code": 8, "message": "m"}),
        )
        .await;
    assert_eq!(exhausted.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(exhausted.header("retry-after"), "1");
}

#[tokio::test]
async fn the_edge_enforces_the_contract_before_any_service_sees_the_call() {
    let gateway = spawn_gateway().await;
    let calls = || gateway.mesh.seen.calls.load(Ordering::SeqCst);

    // Every violated field, in one 400, and the service never called.
    let before = calls();
    let invalid = gateway
        .send_json(
            "POST",
            "/v1/echo",
            &json!({"message": "", "count": 11, "email": "x"}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let fields: Vec<String> = invalid.json()["details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|detail| {
            detail["fieldViolations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|violation| violation["field"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(fields, ["message", "email", "count"]);
    assert_eq!(calls(), before, "the service was not called");

    // No token: 401 with a challenge, without touching the service.
    let anonymous = gateway.get("/v1/echo/me").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.header("www-authenticate"),
        "Bearer realm=\"safra\""
    );
    assert_eq!(error_reason(&anonymous), "TOKEN_MISSING");
    let bad = gateway
        .http(
            "GET",
            "/v1/echo/me",
            &[("authorization", "Bearer not.a.token")],
            b"",
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.header("www-authenticate").contains("invalid_token"));
    assert_eq!(calls(), before);

    // A valid token is forwarded; the service sees the user.
    let token = gateway.mesh.token("investor");
    let bearer = format!("Bearer {token}");
    let me = gateway
        .http("GET", "/v1/echo/me", &[("authorization", &bearer)], b"")
        .await;
    assert_eq!(me.status, StatusCode::OK, "{:?}", me.body);
    assert_eq!(me.json()["role"], "investor");
    assert_eq!(me.json()["callerService"], "gateway");

    // A role the method does not allow: 403.
    let admin_only = gateway
        .http(
            "POST",
            "/v1/echo:admin",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            br#"{"message": "hi"}"#,
        )
        .await;
    assert_eq!(admin_only.status, StatusCode::FORBIDDEN);
    assert_eq!(error_reason(&admin_only), "ROLE_NOT_ALLOWED");
}

#[tokio::test]
async fn rest_streams_as_ndjson_and_as_server_sent_events() {
    let gateway = spawn_gateway().await;
    let ndjson = gateway.get("/v1/echo:stream?count=3").await;
    assert_eq!(ndjson.header("content-type"), "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8_lossy(&ndjson.body)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");

    let events = gateway
        .http(
            "GET",
            "/v1/shelves:stream?name=s",
            &[("accept", "text/event-stream")],
            b"",
        )
        .await;
    assert_eq!(events.header("content-type"), "text/event-stream");
    let text = String::from_utf8_lossy(&events.body).into_owned();
    let data: Vec<Value> = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|json| serde_json::from_str(json).expect("JSON data"))
        .collect();
    assert_eq!(data.len(), 3, "{text}");
    assert!(data.iter().all(|shelf| shelf["name"] == "s"));
}

fn grpc_client(gateway: &Gateway) -> EchoServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr))
        .expect("endpoint")
        .connect_lazy();
    EchoServiceClient::new(channel)
}

#[tokio::test]
async fn native_grpc_is_proxied_with_the_same_gate_and_internal_methods_hidden() {
    let gateway = spawn_gateway().await;
    let mut client = grpc_client(&gateway);
    let echoed = client
        .echo(EchoRequest {
            message: "hello".into(),
            ..Default::default()
        })
        .await
        .expect("echo")
        .into_inner();
    assert_eq!(
        (echoed.message.as_str(), echoed.caller_service.as_str()),
        ("hello", "gateway")
    );

    let internal = client
        .internal_echo(InternalEchoRequest {
            message: "x".into(),
        })
        .await
        .expect_err("internal");
    assert_eq!(internal.code(), Code::Unimplemented);

    let invalid = client
        .echo(EchoRequest::default())
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(reason(&invalid), "safra/VALIDATION_FAILED");

    let denied = client
        .admin_echo(with_token(
            AdminEchoRequest {
                message: "x".into(),
            },
            &gateway.mesh.token("investor"),
        ))
        .await
        .expect_err("role");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut stream = client
        .stream_echo(StreamEchoRequest { count: 3 })
        .await
        .expect("stream")
        .into_inner();
    let mut received = 0;
    while let Some(item) = stream.message().await.expect("item") {
        assert!(!item.message.is_empty());
        received += 1;
    }
    assert_eq!(received, 3);
}

/// A grpc-web frame: flag, length, payload.
pub(crate) fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(flag);
    out.put_u32(u32::try_from(payload.len()).expect("small"));
    out.put_slice(payload);
    out.to_vec()
}

/// The messages and the trailer block of a grpc-web response body.
fn unframe(mut body: Bytes) -> (Vec<Bytes>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let length = body.get_u32() as usize;
        let payload = body.split_to(length);
        if flag & 0x80 == 0 {
            messages.push(payload);
        } else {
            trailers.push_str(&String::from_utf8_lossy(&payload));
        }
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_over_http1_answers_unary_and_streams_with_trailers_in_the_body() {
    let gateway = spawn_gateway().await;
    let request = EchoRequest {
        message: "web".into(),
        ..Default::default()
    }
    .encode_to_vec();

    let answer = gateway
        .http(
            "POST",
            "/safra.echo.v1.EchoService/Echo",
            &[("content-type", "application/grpc-web+proto")],
            &frame(0, &request),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .header("content-type")
            .starts_with("application/grpc-web")
    );
    let (messages, trailers) = unframe(answer.body.clone());
    assert_eq!(messages.len(), 1);
    let echoed = EchoResponse::decode(messages[0].clone()).expect("EchoResponse");
    assert_eq!(echoed.message, "web");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // The text variant: base64 both ways.
    let text = base64::engine::general_purpose::STANDARD.encode(frame(0, &request));
    let answer = gateway
        .http(
            "POST",
            "/safra.echo.v1.EchoService/Echo",
            &[
                ("content-type", "application/grpc-web-text"),
                ("accept", "application/grpc-web-text"),
            ],
            text.as_bytes(),
        )
        .await;
    // Each chunk is padded base64 of its own: decode quantum by quantum.
    let decoded: Vec<u8> = answer
        .body
        .chunks(4)
        .flat_map(|quantum| {
            base64::engine::general_purpose::STANDARD
                .decode(quantum)
                .expect("base64")
        })
        .collect();
    let (messages, trailers) = unframe(Bytes::from(decoded));
    assert_eq!(messages.len(), 1);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // Server streaming.
    let answer = gateway
        .http(
            "POST",
            "/safra.echo.v1.EchoService/StreamEcho",
            &[("content-type", "application/grpc-web+proto")],
            &frame(0, &StreamEchoRequest { count: 4 }.encode_to_vec()),
        )
        .await;
    let (messages, trailers) = unframe(answer.body.clone());
    assert_eq!(messages.len(), 4);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // Errors are statuses a browser can read.
    let answer = gateway
        .http(
            "POST",
            "/safra.echo.v1.EchoService/InternalEcho",
            &[("content-type", "application/grpc-web+proto")],
            &frame(0, &[]),
        )
        .await;
    let status = answer.header("grpc-status").to_owned();
    let (_, trailers) = unframe(answer.body.clone());
    assert!(
        status == "12" || trailers.contains("grpc-status:12"),
        "{status} {trailers}"
    );
}

/// Validates an OpenAPI document with `openapi-spec-validator` (PyPI), which
/// the test command installs.
fn assert_valid_openapi(document: &[u8]) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), document).expect("written");
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document (run scripts/test, which installs it):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_operation_and_validates() {
    let gateway = spawn_gateway().await;
    let answer = gateway.get("/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK);
    let document = answer.json();
    assert_eq!(document["openapi"], "3.1.0");
    let shelf = &document["paths"]["/v1/shelves/{name}"]["get"];
    assert_eq!(shelf["operationId"], "TranscodeService_GetShelf");
    assert_eq!(shelf["tags"], json!(["TranscodeService"]));
    assert_eq!(
        document["paths"]["/v1/rooms/{location.room}/shelves/{name}"]["get"]["operationId"],
        "TranscodeService_GetShelf_2"
    );
    let parameters: Vec<&str> = shelf["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|parameter| parameter["name"].as_str())
        .collect();
    assert!(parameters.contains(&"name"), "{parameters:?}");
    assert!(parameters.contains(&"location.room"), "{parameters:?}");
    assert!(parameters.contains(&"labels"), "{parameters:?}");
    // Rules become constraints; authorization becomes security.
    let echo = &document["components"]["schemas"]["safra.echo.v1.EchoRequest"];
    assert_eq!(echo["properties"]["message"]["maxLength"], 64);
    assert_eq!(echo["properties"]["count"]["maximum"], 10);
    assert_eq!(echo["required"], json!(["message"]));
    assert_eq!(
        document["paths"]["/v1/echo/me"]["get"]["security"],
        json!([{"bearer": []}])
    );
    assert_eq!(
        document["paths"]["/v1/echo:admin"]["post"]["x-safra-roles"],
        json!(["admin"])
    );
    // Internal methods are not described.
    let text = answer.body.clone();
    assert!(!String::from_utf8_lossy(&text).contains("InternalEcho"));
    assert_valid_openapi(&answer.body);

    let docs = gateway.get("/docs").await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.header("content-type").starts_with("text/html"));
    assert!(String::from_utf8_lossy(&docs.body).contains("/openapi.json"));
}

#[test]
fn the_production_openapi_document_validates_with_stable_operation_ids() {
    let verifier = Arc::new(safra::identity::auth::TokenVerifier::new(
        "test",
        Arc::new(safra::identity::auth::StaticKeys(Arc::default())),
    ));
    let edge = Edge::new(
        &safra::contract::descriptor::pool().expect("contracts"),
        verifier,
        HashMap::new(),
        EdgeSettings::default(),
    )
    .expect("edge");
    let document: Value = serde_json::from_slice(edge.openapi()).expect("JSON");
    let mut ids: Vec<String> = document["paths"]
        .as_object()
        .into_iter()
        .flat_map(|paths| paths.values())
        .flat_map(|operations| operations.as_object().into_iter().flat_map(|o| o.values()))
        .filter_map(|operation| operation["operationId"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert!(
        ids.contains(&"AccountsService_Register".to_owned()),
        "{ids:?}"
    );
    assert!(ids.contains(&"NotificationsService_StreamNotifications".to_owned()));
    // The 22 REST bindings of DESIGN.md, CancelOffering and the jobs
    // monitor's 5 (ListOutboxes added to DESIGN's 4).
    assert_eq!(ids.len(), 28, "one operation per REST binding: {ids:?}");
    assert_eq!(
        document["paths"]["/v1/accounts:register"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/safra.accounts.v1.RegisterRequest"
    );
    assert_valid_openapi(edge.openapi());
}

#[tokio::test]
async fn reflection_at_the_edge_lists_the_public_services() {
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1alpha;

    let gateway = spawn_gateway().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr))
        .expect("endpoint")
        .connect_lazy();
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = responses.next().await.expect("one").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("expected a list, got {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "safra.echo.v1.EchoService",
            "safra.transcode.v1.TranscodeService"
        ]
    );
}

#[tokio::test]
async fn each_client_address_has_a_rate_limit_at_every_protocol() {
    let gateway = spawn_gateway_with(EdgeSettings {
        rate_limit_rps: 5,
        ..EdgeSettings::default()
    })
    .await;
    // A burst of twice the rate passes, then REST answers 429.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(gateway.get("/v1/shelves/s1").await);
    }
    let limited: Vec<&Answer> = statuses
        .iter()
        .filter(|answer| answer.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(
        !limited.is_empty(),
        "some requests over the burst are refused"
    );
    assert!(statuses[0].status == StatusCode::OK);
    assert_eq!(limited[0].header("retry-after"), "1");
    assert_eq!(error_reason(limited[0]), "RATE_LIMITED");
    // The same address over gRPC is refused with RESOURCE_EXHAUSTED.
    let status = grpc_client(&gateway)
        .echo(EchoRequest {
            message: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("limited");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "safra/RATE_LIMITED");
}

#[tokio::test]
async fn cors_admits_configured_origins_and_exposes_grpc_headers() {
    let gateway = spawn_gateway().await;
    let preflight = gateway
        .http(
            "OPTIONS",
            "/safra.echo.v1.EchoService/Echo",
            &[
                ("origin", "http://console.test"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,x-grpc-web,authorization",
                ),
            ],
            b"",
        )
        .await;
    assert!(preflight.status.is_success(), "{:?}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        "http://console.test"
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .contains("x-grpc-web")
    );

    let simple = gateway
        .http(
            "GET",
            "/v1/shelves/s1",
            &[("origin", "http://console.test")],
            b"",
        )
        .await;
    assert_eq!(
        simple.header("access-control-allow-origin"),
        "http://console.test"
    );
    let exposed = simple.header("access-control-expose-headers");
    for name in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-trace-id",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }

    let stranger = gateway
        .http(
            "GET",
            "/v1/shelves/s1",
            &[("origin", "http://evil.test")],
            b"",
        )
        .await;
    assert_eq!(stranger.header("access-control-allow-origin"), "");
}

/// Telemetry as in production (trace ids on), logs discarded: answers then
/// carry `x-trace-id`. One per test process, which nextest gives each test.
fn telemetry() -> safra::observability::telemetry::Telemetry {
    safra::observability::telemetry::init_with_writer(
        &safra::config::LogConfig {
            format: safra::config::LogFormat::Json,
            filter: "info".into(),
            otlp_endpoint: None,
        },
        "gateway-test",
        std::io::sink,
    )
    .expect("telemetry")
}

#[tokio::test]
async fn every_answer_carries_the_trace_id_and_a_browser_traceparent_is_followed() {
    let _telemetry = telemetry();
    let gateway = spawn_gateway().await;
    let fresh = gateway.get("/v1/shelves/s1").await;
    let id = fresh.header("x-trace-id").to_owned();
    assert_eq!(id.len(), 32, "{id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));

    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let followed = gateway
        .http("GET", "/v1/nowhere", &[("traceparent", parent)], b"")
        .await;
    assert_eq!(followed.status, StatusCode::NOT_FOUND);
    assert_eq!(
        followed.header("x-trace-id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[tokio::test]
async fn a_node_grpc_web_client_calls_unary_and_streaming_methods() {
    // Telemetry on, so that answers carry x-trace-id as in production.
    let _telemetry = telemetry();
    let gateway = spawn_gateway().await;
    let console = crate::repository_root().join("gateway/console");
    assert!(
        console.join("test/gen").is_dir(),
        "the console's generated clients are missing: run scripts/test (npm run build in gateway/console)"
    );
    let output = tokio::process::Command::new("node")
        .arg("test/grpc-web.mjs")
        .arg(format!("http://{}", gateway.addr))
        .current_dir(&console)
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "the Node grpc-web client failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn grpc_web_over_http2_answers_too() {
    let gateway = spawn_gateway().await;
    let stream = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(connection);
    let request = EchoRequest {
        message: "h2".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let request = http::Request::post(format!(
        "http://{}/safra.echo.v1.EchoService/Echo",
        gateway.addr
    ))
    .header("content-type", "application/grpc-web+proto")
    .body(Full::new(Bytes::from(frame(0, &request))))
    .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let (messages, trailers) = unframe(body);
    let echoed = EchoResponse::decode(messages[0].clone()).expect("EchoResponse");
    assert_eq!(echoed.message, "h2");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn metrics_count_calls_by_rpc_and_status_whatever_the_protocol() {
    let gateway = spawn_gateway().await;
    // Two REST calls and a gRPC one of the same RPC; a REST failure; a stream.
    gateway.get("/v1/shelves/a").await;
    gateway.get("/v1/shelves/b").await;
    let mut client = grpc_client(&gateway);
    client
        .echo(EchoRequest {
            message: "m".into(),
            ..Default::default()
        })
        .await
        .expect("echo");
    gateway
        .send_json(
            "POST",
            "/v1/shelves:fail",
            &json!({"code": 5, "message": "m"}),
        )
        .await;
    gateway.get("/v1/echo:stream?count=2").await;

    // The public port does not show them: they are the admin port's.
    assert_eq!(gateway.get("/metrics").await.status, StatusCode::NOT_FOUND);
    let text = gateway.edge.render_metrics();
    for expected in [
        r#"safra_grpc_requests_total{method="/safra.transcode.v1.TranscodeService/GetShelf",code="OK"} 2"#,
        r#"safra_grpc_requests_total{method="/safra.echo.v1.EchoService/Echo",code="OK"} 1"#,
        r#"safra_grpc_requests_total{method="/safra.transcode.v1.TranscodeService/Fail",code="NOT_FOUND"} 1"#,
        r#"safra_grpc_requests_total{method="/safra.echo.v1.EchoService/StreamEcho",code="OK"} 1"#,
        r#"safra_build_info{process="gateway""#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}
