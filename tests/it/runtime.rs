//! The full server stack on the test echo contract: mutual TLS, tokens
//! verified with keys fetched from an accounts server over mTLS, the
//! contract's authorization and field rules enforced before the handler, and
//! the gRPC interop rules (unknown method, deadline, cancellation, streaming).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use safra::{
    accounts::v1::{
        GetJwksRequest, GetMeRequest, GetUserRequest, JsonWebKey, JsonWebKeySet, ListUsersRequest,
        ListUsersResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse,
        RefreshRequest, RefreshResponse, RegisterRequest, RegisterResponse, User,
        accounts_service_client::AccountsServiceClient,
        accounts_service_server::{AccountsService, AccountsServiceServer},
    },
    contract::status,
    identity::auth::{AuthenticatedUser, DEFAULT_ISSUER, SigningKey, TokenSigner, TokenVerifier},
    identity::tls::PeerInfo,
    mesh::Service,
    testing::echo::v1::{
        AdminEchoRequest, EchoRequest, EchoResponse, InternalEchoRequest, SlowRequest,
        StreamEchoRequest, WhoAmIRequest,
        echo_service_client::EchoServiceClient,
        echo_service_server::{EchoService, EchoServiceServer},
    },
    transport::client::AccountsJwks,
    transport::server::{Limits, MeshServer},
};
use safra_test_support::TestPki;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// An accounts stand-in that publishes one signing key, as the real one will.
struct JwksOnly {
    key: JsonWebKey,
}

#[tonic::async_trait]
impl AccountsService for JwksOnly {
    async fn register(
        &self,
        _: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        Err(Status::unimplemented("test stand-in"))
    }
    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unimplemented("test stand-in"))
    }
    async fn refresh(
        &self,
        _: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        Err(Status::unimplemented("test stand-in"))
    }
    async fn logout(&self, _: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        Err(Status::unimplemented("test stand-in"))
    }
    async fn get_me(&self, _: Request<GetMeRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("test stand-in"))
    }
    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        Err(Status::unimplemented("test stand-in"))
    }
    async fn list_users(
        &self,
        _: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        Err(Status::unimplemented("test stand-in"))
    }
    async fn get_jwks(
        &self,
        _: Request<GetJwksRequest>,
    ) -> Result<Response<JsonWebKeySet>, Status> {
        Ok(Response::new(JsonWebKeySet {
            keys: vec![self.key.clone()],
        }))
    }
}

/// What the echo handlers saw, for assertions.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) calls: AtomicUsize,
    slow_dropped: AtomicBool,
    slow_finished: AtomicBool,
}

struct Echo {
    seen: Arc<Seen>,
    /// Where an Echo of "relay" is passed on, as a downstream call.
    relay: Option<EchoServiceClient<safra::transport::client::MeshChannel>>,
}

fn reply<T>(request: &Request<T>, message: String) -> Response<EchoResponse> {
    let user = AuthenticatedUser::of(request);
    Response::new(EchoResponse {
        message,
        caller_service: PeerInfo::of(request)
            .and_then(|peer| peer.service.clone())
            .unwrap_or_default(),
        user_id: user.map(|u| u.user_id.clone()).unwrap_or_default(),
        role: user.map(|u| u.role.clone()).unwrap_or_default(),
    })
}

/// Sets a flag when dropped before completing: the server cut the call short.
struct DropFlag(Arc<Seen>, bool);

impl Drop for DropFlag {
    fn drop(&mut self) {
        if !self.1 {
            self.0.slow_dropped.store(true, Ordering::SeqCst);
        }
    }
}

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        tracing::info!(text = %request.get_ref().message, "echo handled");
        let message = request.get_ref().message.clone();
        if let (Some(relay), "relay") = (&self.relay, message.as_str()) {
            let context = safra::transport::client::CallContext::from_inbound(&request);
            let downstream = context.outbound(EchoRequest {
                message: "relayed".into(),
                ..Default::default()
            })?;
            let answer = relay.clone().echo(downstream).await?.into_inner();
            return Ok(reply(&request, answer.message));
        }
        Ok(reply(&request, message))
    }
    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        Ok(reply(&request, String::new()))
    }
    async fn admin_echo(
        &self,
        request: Request<AdminEchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        let message = request.get_ref().message.clone();
        Ok(reply(&request, message))
    }
    async fn internal_echo(
        &self,
        request: Request<InternalEchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        let message = request.get_ref().message.clone();
        Ok(reply(&request, message))
    }
    type StreamEchoStream = EchoStream;
    async fn stream_echo(
        &self,
        request: Request<StreamEchoRequest>,
    ) -> Result<Response<Self::StreamEchoStream>, Status> {
        let count = request.get_ref().count;
        let stream = tokio_stream::iter((0..count).map(|index| {
            Ok(EchoResponse {
                message: index.to_string(),
                ..Default::default()
            })
        }));
        Ok(Response::new(Box::pin(stream)))
    }
    async fn slow(&self, request: Request<SlowRequest>) -> Result<Response<EchoResponse>, Status> {
        let mut flag = DropFlag(self.seen.clone(), false);
        let delay = u64::try_from(request.get_ref().delay_ms).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        flag.1 = true;
        self.seen.slow_finished.store(true, Ordering::SeqCst);
        Ok(reply(&request, "slow".into()))
    }
}

/// An accounts stand-in and an echo server, both over mTLS, and a signer
/// whose key the stand-in publishes.
pub(crate) struct Mesh {
    pub(crate) pki: TestPki,
    pub(crate) echo: SocketAddr,
    admin: SocketAddr,
    signer: TokenSigner,
    pub(crate) seen: Arc<Seen>,
    pub(crate) verifier: Arc<TokenVerifier>,
}

pub(crate) async fn spawn_mesh(limits: Limits) -> Mesh {
    let pki = TestPki::new();
    let key = SigningKey::generate("test-key-1").expect("a key");
    let published = JsonWebKey {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        kid: key.kid().into(),
        x: key.public_key().x.clone(),
        alg: "EdDSA".into(),
        r#use: "sig".into(),
    };
    let signer = TokenSigner::new(key, DEFAULT_ISSUER);

    let accounts_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let accounts_addr = accounts_listener.local_addr().expect("addr");
    let accounts_tls = pki.tls("accounts");
    let no_keys = Arc::new(TokenVerifier::new(
        DEFAULT_ISSUER,
        Arc::new(safra::identity::auth::StaticKeys(Arc::default())),
    ));
    let accounts = MeshServer::new(Service::Accounts, accounts_tls, no_keys)
        .expect("server")
        .add_service(AccountsServiceServer::new(JwksOnly { key: published }));
    tokio::spawn(accounts.serve(accounts_listener, &[], std::future::pending()));

    // The echo server fetches keys from accounts over mTLS, as its own identity.
    let echo_tls = pki.tls("wallet");
    let keys =
        safra::transport::client::mesh_channel(&echo_tls, "accounts", &accounts_addr.to_string())
            .expect("channel to accounts");
    let verifier = Arc::new(TokenVerifier::new(
        DEFAULT_ISSUER,
        Arc::new(AccountsJwks::new(keys)),
    ));
    let seen = Arc::new(Seen::default());
    let (echo, admin) = spawn_echo(&pki, limits, verifier.clone(), seen.clone()).await;
    Mesh {
        pki,
        echo,
        admin,
        signer,
        seen,
        verifier,
    }
}

/// An echo server (identity `wallet`) with its admin port, over `pki`.
pub(crate) async fn spawn_echo(
    pki: &TestPki,
    limits: Limits,
    verifier: Arc<TokenVerifier>,
    seen: Arc<Seen>,
) -> (SocketAddr, SocketAddr) {
    spawn_relaying_echo(pki, limits, verifier, seen, None).await
}

/// An echo server that passes an Echo of "relay" on to the echo server at
/// `relay_to`, calling as `marketplace`.
pub(crate) async fn spawn_relaying_echo(
    pki: &TestPki,
    limits: Limits,
    verifier: Arc<TokenVerifier>,
    seen: Arc<Seen>,
    relay_to: Option<SocketAddr>,
) -> (SocketAddr, SocketAddr) {
    let relay = relay_to.map(|addr| {
        EchoServiceClient::new(
            safra::transport::client::mesh_channel(
                &pki.tls("marketplace"),
                "wallet",
                &addr.to_string(),
            )
            .expect("relay channel"),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let echo = listener.local_addr().expect("addr");
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = admin_listener.local_addr().expect("addr");
    let always_ready: safra::observability::admin::Check =
        Arc::new(|| Box::pin(async { Ok(()) }) as safra::observability::admin::CheckFuture);
    let server = MeshServer::new(Service::Wallet, pki.tls("wallet"), verifier)
        .expect("server")
        .with_contracts(
            safra::testing::pool().expect("test contracts"),
            safra::testing::FILE_DESCRIPTOR_SET,
        )
        .with_limits(limits)
        .with_version("test-build")
        .with_admin(admin_listener, vec![("database".into(), always_ready)])
        .add_service(EchoServiceServer::new(Echo { seen, relay }))
        .add_service(safra::testing::Mirror);
    tokio::spawn(server.serve(listener, &[], std::future::pending()));
    (echo, admin)
}

impl Mesh {
    /// A client calling as the mesh process `identity`.
    pub(crate) fn client(
        &self,
        identity: &str,
    ) -> EchoServiceClient<safra::transport::client::MeshChannel> {
        let channel = safra::transport::client::mesh_channel(
            &self.pki.tls(identity),
            "wallet",
            &self.echo.to_string(),
        )
        .expect("channel");
        EchoServiceClient::new(channel)
    }

    pub(crate) fn token(&self, role: &str) -> String {
        self.signer
            .sign(
                "0b9f3c1e-5d4a-4c1b-8f2e-6a7b8c9d0e1f",
                role,
                Duration::from_secs(600),
            )
            .expect("signed")
            .0
    }
}

pub(crate) fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

pub(crate) fn reason(status: &Status) -> String {
    status::details(status)
        .error_info
        .map(|info| format!("{}/{}", info.domain, info.reason))
        .unwrap_or_default()
}

pub(crate) fn hello() -> EchoRequest {
    EchoRequest {
        message: "hello".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_public_method_answers_anyone_and_knows_the_calling_service() {
    let mesh = spawn_mesh(Limits::default()).await;
    let response = mesh
        .client("gateway")
        .echo(hello())
        .await
        .expect("public")
        .into_inner();
    assert_eq!(response.message, "hello");
    assert_eq!(response.caller_service, "gateway");
    assert_eq!(response.user_id, "");
}

#[tokio::test]
async fn a_token_on_a_public_method_is_still_verified() {
    let mesh = spawn_mesh(Limits::default()).await;
    let status = mesh
        .client("gateway")
        .echo(with_token(hello(), "not.a.token"))
        .await
        .expect_err("a bad token is refused even here");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "safra/TOKEN_INVALID");
}

#[tokio::test]
async fn signed_in_methods_need_a_valid_token_whose_keys_come_from_accounts() {
    let mesh = spawn_mesh(Limits::default()).await;
    let mut client = mesh.client("gateway");

    let missing = client
        .who_am_i(WhoAmIRequest {})
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(reason(&missing), "safra/TOKEN_MISSING");

    let me = client
        .who_am_i(with_token(WhoAmIRequest {}, &mesh.token("investor")))
        .await
        .expect("a valid token")
        .into_inner();
    assert_eq!(
        (me.user_id.as_str(), me.role.as_str()),
        ("0b9f3c1e-5d4a-4c1b-8f2e-6a7b8c9d0e1f", "investor")
    );
    assert_eq!(
        mesh.verifier.fetch_count(),
        1,
        "the JWKS came from accounts over mTLS"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    let (_, mut claims) = mesh
        .signer
        .sign("u", "investor", Duration::from_secs(1))
        .expect("signed");
    claims.exp = now - 3600;
    claims.nbf = now - 7200;
    let expired = mesh.signer.sign_claims(&claims).expect("signed");
    let status = client
        .who_am_i(with_token(WhoAmIRequest {}, &expired))
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "safra/TOKEN_EXPIRED");
}

#[tokio::test]
async fn role_methods_refuse_other_roles() {
    let mesh = spawn_mesh(Limits::default()).await;
    let mut client = mesh.client("gateway");
    let request = || AdminEchoRequest {
        message: "hi".into(),
    };
    let denied = client
        .admin_echo(with_token(request(), &mesh.token("investor")))
        .await
        .expect_err("an investor is not an admin");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "safra/ROLE_NOT_ALLOWED");
    let anonymous = client.admin_echo(request()).await.expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    client
        .admin_echo(with_token(request(), &mesh.token("admin")))
        .await
        .expect("an admin may");
}

#[tokio::test]
async fn internal_methods_admit_only_the_declared_services() {
    let mesh = spawn_mesh(Limits::default()).await;
    let request = || InternalEchoRequest {
        message: "hi".into(),
    };
    let denied = mesh
        .client("gateway")
        .internal_echo(request())
        .await
        .expect_err("the gateway is not marketplace");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "safra/CALLER_NOT_ALLOWED");
    let response = mesh
        .client("marketplace")
        .internal_echo(request())
        .await
        .expect("marketplace may")
        .into_inner();
    assert_eq!(response.caller_service, "marketplace");
}

#[tokio::test]
async fn invalid_fields_are_all_reported_and_never_reach_the_handler() {
    let mesh = spawn_mesh(Limits::default()).await;
    let status = mesh
        .client("gateway")
        .echo(EchoRequest {
            message: String::new(),
            email: "nope".into(),
            count: 11,
            amount: Some(safra::r#type::v1::Money {
                currency_code: "BRL".into(),
                amount_minor: 0,
            }),
        })
        .await
        .expect_err("four violations");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason(&status), "safra/VALIDATION_FAILED");
    let fields: Vec<String> = status::details(&status)
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["message", "email", "count", "amount.amount_minor"]);
    assert_eq!(
        mesh.seen.calls.load(Ordering::SeqCst),
        0,
        "the handler never ran"
    );
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_decoding() {
    let mesh = spawn_mesh(Limits {
        max_message_size: 1024,
        ..Limits::default()
    })
    .await;
    let status = mesh
        .client("gateway")
        .echo(EchoRequest {
            message: "x".repeat(4096),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "safra/REQUEST_TOO_LARGE");
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let mesh = spawn_mesh(Limits::default()).await;
    let channel = safra::transport::client::mesh_channel(
        &mesh.pki.tls("gateway"),
        "wallet",
        &mesh.echo.to_string(),
    )
    .expect("channel");
    let status = AccountsServiceClient::new(channel)
        .get_me(GetMeRequest {})
        .await
        .expect_err("not served here");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_one_millisecond_deadline_on_a_slow_call_is_deadline_exceeded() {
    let mesh = spawn_mesh(Limits::default()).await;
    let mut request = Request::new(SlowRequest { delay_ms: 2000 });
    request.set_timeout(Duration::from_millis(1));
    let status = mesh
        .client("gateway")
        .slow(request)
        .await
        .expect_err("too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded);
}

#[tokio::test]
async fn a_cancelled_call_runs_its_handler_to_the_end_and_counts_cancelled() {
    // A handler cut short half-way through a database transaction would
    // throw its pooled connection away; the server lets it finish instead,
    // and only the answer is lost.
    let mesh = spawn_mesh(Limits::default()).await;
    let mut client = mesh.client("gateway");
    let call = tokio::spawn(async move { client.slow(SlowRequest { delay_ms: 1_000 }).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    let mut finished = false;
    for _ in 0..100 {
        if mesh.seen.slow_finished.load(Ordering::SeqCst) {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(finished, "the cancelled call's handler ran to its end");
    assert!(
        !mesh.seen.slow_dropped.load(Ordering::SeqCst),
        "the handler was never dropped half-way"
    );
    let (_, metrics) = http_get(mesh.admin, "/metrics").await;
    assert!(
        metrics.contains(
            r#"safra_grpc_requests_total{method="/safra.echo.v1.EchoService/Slow",code="CANCELLED"} 1"#
        ),
        "the server counts the call CANCELLED:\n{metrics}"
    );
}

#[tokio::test]
async fn server_streaming_passes_the_stage_and_streams() {
    let mesh = spawn_mesh(Limits::default()).await;
    let mut stream = mesh
        .client("gateway")
        .stream_echo(StreamEchoRequest { count: 3 })
        .await
        .expect("stream")
        .into_inner();
    let mut received = Vec::new();
    while let Some(item) = stream.next().await {
        received.push(item.expect("item").message);
    }
    assert_eq!(received, ["0", "1", "2"]);

    let status = mesh
        .client("gateway")
        .stream_echo(StreamEchoRequest { count: 0 })
        .await
        .expect_err("count is at least 1");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[test]
fn the_test_contracts_pass_the_lint() {
    let problems = safra::contract::check(&safra::testing::pool().expect("pool"));
    assert!(problems.is_empty(), "{problems:?}");
}

/// Status and body of a plain HTTP/1.1 GET.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_on_the_admin_port() {
    let mesh = spawn_mesh(Limits::default()).await;
    let mut client = mesh.client("gateway");
    client.echo(hello()).await.expect("ok");
    client.echo(hello()).await.expect("ok");
    client
        .echo(EchoRequest::default())
        .await
        .expect_err("message is required");
    client
        .who_am_i(WhoAmIRequest {})
        .await
        .expect_err("no token");

    let (status, text) = http_get(mesh.admin, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"safra_grpc_requests_total{method="/safra.echo.v1.EchoService/Echo",code="OK"} 2"#,
        r#"safra_grpc_requests_total{method="/safra.echo.v1.EchoService/Echo",code="INVALID_ARGUMENT"} 1"#,
        r#"safra_grpc_requests_total{method="/safra.echo.v1.EchoService/WhoAmI",code="UNAUTHENTICATED"} 1"#,
        r#"safra_grpc_in_flight{method="/safra.echo.v1.EchoService/Echo"} 0"#,
        r#"safra_grpc_request_duration_seconds_count{method="/safra.echo.v1.EchoService/Echo"} 3"#,
        r#"safra_build_info{process="wallet",version="test-build"} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    let (status, body) = http_get(mesh.admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""database":{"status":"ready"}"#), "{body}");
    assert_eq!(http_get(mesh.admin, "/healthz").await.0, 200);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_call_finish_then_stops_serving() {
    let pki = TestPki::new();
    let verifier = Arc::new(TokenVerifier::new(
        DEFAULT_ISSUER,
        Arc::new(safra::identity::auth::StaticKeys(Arc::default())),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = MeshServer::new(Service::Wallet, pki.tls("wallet"), verifier)
        .expect("server")
        .with_contracts(
            safra::testing::pool().expect("test contracts"),
            safra::testing::FILE_DESCRIPTOR_SET,
        )
        // A health watch stays open until the drain bound cuts it.
        .with_limits(Limits {
            drain_timeout: Duration::from_secs(2),
            ..Limits::default()
        })
        .add_service(EchoServiceServer::new(Echo {
            seen: Arc::new(Seen::default()),
            relay: None,
        }));
    let serving = tokio::spawn(server.serve(listener, &[], async {
        stopped.await.ok();
    }));
    let channel =
        safra::transport::client::mesh_channel(&pki.tls("gateway"), "wallet", &addr.to_string())
            .expect("channel");
    let mut client = EchoServiceClient::new(channel.clone());
    client.echo(hello()).await.expect("served before the stop");

    // A load balancer watching health learns of the drain.
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "safra.echo.v1.EchoService".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok").status();
    assert_eq!(first, ServingStatus::Serving);

    let in_flight = tokio::spawn(async move { client.slow(SlowRequest { delay_ms: 300 }).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).expect("signal the stop");
    let draining = watch.next().await.expect("a status").expect("ok").status();
    assert_eq!(
        draining,
        ServingStatus::NotServing,
        "NOT_SERVING while draining"
    );
    let answer = in_flight
        .await
        .expect("joined")
        .expect("the in-flight call finished");
    assert_eq!(answer.into_inner().message, "slow");
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("the server stopped once drained")
        .expect("joined")
        .expect("a clean stop");
    let after = EchoServiceClient::new(channel).echo(hello()).await;
    assert!(after.is_err(), "nothing is served after the stop");
}
