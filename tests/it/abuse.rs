//! The abuse suite: each attack the hardening issue found at the edge,
//! replayed over real sockets and real HTTP/1.1 and HTTP/2 frames against
//! a gateway in front of the test mesh, asserting the defence's outcome
//! (what was refused, closed or accepted), never a timing or a memory
//! figure. The waits below are generous deadlines for an outcome, so a
//! slow machine does not fail them. They run one at a time (the `abuse`
//! test group), each well under a minute.

use std::{
    convert::Infallible,
    io::Write as _,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use safra::{config::EdgeLimits, testing::echo::v1::EchoRequest};
use safra_gateway::EdgeSettings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::gateway::{BODY_LIMIT, Gateway, frame, spawn_gateway_with};

/// Long enough for any outcome on a loaded machine.
const GENEROUS: Duration = Duration::from_secs(20);

fn settings(limits: EdgeLimits) -> EdgeSettings {
    EdgeSettings {
        max_body_bytes: BODY_LIMIT,
        default_timeout: Duration::from_secs(10),
        rate_limit_rps: 0,
        limits,
        ..EdgeSettings::default()
    }
}

/// A request body that sends `first` and then never ends.
struct NeverEnds(Option<Bytes>);

impl hyper::body::Body for NeverEnds {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(first) => Poll::Ready(Some(Ok(Frame::data(first)))),
            None => Poll::Pending,
        }
    }
}

async fn h2c<B>(gateway: &Gateway) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    sender
}

/// The count of `safra_gateway_connections_closed_total` for `reason`.
fn closed(gateway: &Gateway, reason: &str) -> u64 {
    let series = format!("safra_gateway_connections_closed_total{{reason=\"{reason}\"}} ");
    gateway
        .edge
        .render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |value| value.trim().parse().expect("a count"))
}

/// Reads until the peer closes the connection; false if it is still open
/// after [`GENEROUS`].
async fn closed_by_peer(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buffer = [0_u8; 1024];
    let outcome = tokio::time::timeout(GENEROUS, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    outcome.is_ok()
}

#[tokio::test]
async fn abuse_a_body_without_a_token_is_refused_before_it_is_read() {
    // A body deadline far past the wait below: an answer within it can only
    // come from refusing before the body is read.
    let gateway = spawn_gateway_with(settings(EdgeLimits {
        body_timeout: Duration::from_secs(600),
        ..EdgeLimits::default()
    }))
    .await;
    let mut sender = h2c::<NeverEnds>(&gateway).await;

    // REST: an admin-only route, a body that never ends, no token.
    let request = http::Request::post(format!("http://{}/v1/echo:admin", gateway.addr))
        .header("content-type", "application/json")
        .body(NeverEnds(Some(Bytes::from_static(b"{\"message\":"))))
        .expect("request");
    let response = tokio::time::timeout(GENEROUS, sender.send_request(request))
        .await
        .expect("answered while the body is still open")
        .expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // gRPC: the frame announces 4 MB that never come.
    let mut announced = vec![0_u8];
    announced.extend_from_slice(&4_000_000_u32.to_be_bytes());
    let request = http::Request::post(format!(
        "http://{}/safra.echo.v1.EchoService/AdminEcho",
        gateway.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(NeverEnds(Some(Bytes::from(announced))))
    .expect("request");
    let response = tokio::time::timeout(GENEROUS, sender.send_request(request))
        .await
        .expect("answered while the body is still open")
        .expect("response");
    assert_eq!(
        response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok()),
        Some("16"),
        "UNAUTHENTICATED, trailers-only: {:?}",
        response.headers()
    );
    assert_eq!(
        gateway
            .mesh
            .seen
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the service"
    );
}

#[tokio::test]
async fn abuse_silent_slow_and_idle_connections_are_closed() {
    let gateway = spawn_gateway_with(settings(EdgeLimits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..EdgeLimits::default()
    }))
    .await;

    // Sends nothing at all.
    let mut silent = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    // Sends its headers one line at a time, slower than the timeout allows.
    let mut slow = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("first line");
    let dribble = tokio::spawn(async move {
        for line in 0..200 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow
                .write_all(format!("X-Line-{line}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
        }
        false
    });
    // Makes one request and then stays, idle, on a kept-alive connection.
    let mut idle = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");

    assert!(
        closed_by_peer(&mut silent).await,
        "the silent one is closed"
    );
    assert!(closed_by_peer(&mut idle).await, "the idle one is closed");
    assert!(
        tokio::time::timeout(GENEROUS, dribble)
            .await
            .expect("the slow one ends")
            .expect("joined"),
        "the slow one is closed while it still sends headers"
    );
    // Each is counted under the timeout that closed it (hyper's own
    // header-read timer may close the idle one first).
    assert!(closed(&gateway, "header_read") >= 2, "counted");
    assert_eq!(
        closed(&gateway, "header_read") + closed(&gateway, "idle"),
        3,
        "all three closed by a timeout"
    );
}

#[tokio::test]
async fn abuse_connections_past_the_per_client_bound_are_closed_at_once() {
    let gateway = spawn_gateway_with(settings(EdgeLimits {
        max_connections_per_client: 3,
        ..EdgeLimits::default()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(gateway.addr)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut answer = [0_u8; 12];
        stream.read_exact(&mut answer).await.expect("answered");
        assert_eq!(&answer, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut fourth = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("the kernel accepts it");
    assert!(closed_by_peer(&mut fourth).await, "the gateway closes it");
    assert_eq!(closed(&gateway, "over_client_limit"), 1);
    drop(held);
}

#[tokio::test]
async fn abuse_duplicate_json_keys_are_refused_naming_the_field() {
    let gateway = spawn_gateway_with(settings(EdgeLimits::default())).await;
    let answer = gateway
        .http(
            "POST",
            "/v1/echo",
            &[("content-type", "application/json")],
            br#"{"message":"shown to the log","message":"acted on"}"#,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    let violation = &body["details"]
        .as_array()
        .expect("details")
        .iter()
        .find_map(|detail| detail["fieldViolations"].as_array())
        .expect("a BadRequest")[0];
    assert_eq!(violation["field"], "message");
    assert_eq!(violation["reason"], "DUPLICATE");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

async fn grpc_status_of(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    gateway: &Gateway,
    body: Vec<u8>,
) -> (String, Bytes) {
    let request = http::Request::post(format!(
        "http://{}/safra.echo.v1.EchoService/Echo",
        gateway.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-encoding", "gzip")
    .body(http_body_util::Full::new(Bytes::from(body)))
    .expect("request");
    let response = tokio::time::timeout(GENEROUS, sender.send_request(request))
        .await
        .expect("answered")
        .expect("response");
    let from_headers = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let collected = response.into_body().collect().await.expect("body");
    let from_trailers = collected
        .trailers()
        .and_then(|trailers| trailers.get("grpc-status"))
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (
        from_headers.or(from_trailers).unwrap_or_default(),
        collected.to_bytes(),
    )
}

#[tokio::test]
async fn abuse_gzip_requests_are_accepted_and_a_bomb_is_refused() {
    let gateway = spawn_gateway_with(settings(EdgeLimits::default())).await;
    let mut sender = h2c(&gateway).await;
    let message = EchoRequest {
        message: "squeezed".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let (status, body) = grpc_status_of(&mut sender, &gateway, frame(1, &gzip(&message))).await;
    assert_eq!(status, "0");
    assert!(
        String::from_utf8_lossy(&body).contains("squeezed"),
        "echoed back"
    );
    // A kilobyte that inflates to far past the message limit.
    let bomb = gzip(&vec![0_u8; BODY_LIMIT * 64]);
    assert!(bomb.len() < BODY_LIMIT);
    let (status, _) = grpc_status_of(&mut sender, &gateway, frame(1, &bomb)).await;
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED");
}

#[tokio::test]
async fn abuse_the_fixed_routes_are_rate_limited_too() {
    let gateway = spawn_gateway_with(EdgeSettings {
        rate_limit_rps: 1,
        ..settings(EdgeLimits::default())
    })
    .await;
    let answers = [
        gateway.get("/healthz").await.status,
        gateway.get("/healthz").await.status,
        gateway.get("/openapi.json").await.status,
    ];
    assert_eq!(
        answers,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "a burst of two, then refused"
    );
    assert!(
        gateway
            .edge
            .render_metrics()
            .contains(r#"safra_gateway_rate_limited_total{budget="address"} 1"#)
    );
}
