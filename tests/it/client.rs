//! Outbound calls through the client side of the mesh runtime: the deadline,
//! the user's token and the trace follow a call downstream; calls declared
//! idempotent are retried within a budget, others never; calls spread over a
//! service's endpoints and skip a dead one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use safra::{
    identity::auth::AuthenticatedUser,
    testing::echo::v1::{EchoRequest, WhoAmIRequest},
    transport::client::{
        CallContext,
        retry::{Retrier, RetryPolicy},
    },
    transport::server::Limits,
};
use tonic::{Code, Request, Response, Status};

use super::runtime::{Seen, hello, reason, spawn_echo, spawn_mesh};

const ECHO: &str = "/safra.echo.v1.EchoService/Echo";
const ADMIN_ECHO: &str = "/safra.echo.v1.EchoService/AdminEcho";

fn inbound_with_timeout(timeout: &str) -> Request<()> {
    let mut request = Request::new(());
    request
        .metadata_mut()
        .insert("grpc-timeout", timeout.parse().expect("ascii"));
    request
}

fn retrier() -> Retrier {
    Retrier::new(
        &safra::testing::pool().expect("test contracts"),
        RetryPolicy {
            base_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
    )
}

#[test]
fn an_outbound_call_gets_what_is_left_of_the_deadline_minus_a_margin() {
    let context = CallContext::from_inbound(&inbound_with_timeout("500m"));
    let outbound = context.outbound(hello()).expect("time is left");
    let timeout = outbound
        .metadata()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(safra::transport::client::parse_grpc_timeout)
        .expect("a grpc-timeout");
    assert!(timeout <= Duration::from_millis(495), "{timeout:?}");
    assert!(timeout >= Duration::from_millis(300), "{timeout:?}");
}

#[tokio::test]
async fn a_call_with_no_time_left_fails_without_being_sent() {
    let mesh = spawn_mesh(Limits::default()).await;
    let context = CallContext::from_inbound(&inbound_with_timeout("1m"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let client = mesh.client("gateway");
    let status = retrier()
        .call(ECHO, &context, hello(), |request| {
            let mut client = client.clone();
            async move { client.echo(request).await }
        })
        .await
        .expect_err("no time left");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        mesh.seen.calls.load(Ordering::SeqCst),
        0,
        "nothing was sent"
    );
}

#[tokio::test]
async fn calls_on_a_users_behalf_forward_the_token_and_background_calls_do_not() {
    let mesh = spawn_mesh(Limits::default()).await;
    let token = mesh.token("producer");
    let mut inbound = Request::new(());
    inbound.extensions_mut().insert(AuthenticatedUser {
        user_id: "0b9f3c1e-5d4a-4c1b-8f2e-6a7b8c9d0e1f".into(),
        role: "producer".into(),
        token,
        expires_at: 0,
    });
    let context = CallContext::from_inbound(&inbound);
    let event_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let linked = context
        .clone()
        .with_traceparent(event_trace)
        .outbound(())
        .expect("no deadline");
    assert_eq!(
        linked
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
        Some(event_trace),
        "an explicit trace parent is carried"
    );
    let outbound = context.outbound(WhoAmIRequest {}).expect("no deadline");
    let me = mesh
        .client("marketplace")
        .who_am_i(outbound)
        .await
        .expect("the forwarded token verifies")
        .into_inner();
    assert_eq!(
        (me.user_id.as_str(), me.role.as_str()),
        ("0b9f3c1e-5d4a-4c1b-8f2e-6a7b8c9d0e1f", "producer")
    );
    assert_eq!(me.caller_service, "marketplace");

    let background = CallContext::background(Duration::from_secs(5));
    let status = mesh
        .client("marketplace")
        .who_am_i(background.outbound(WhoAmIRequest {}).expect("time left"))
        .await
        .expect_err("the service itself is no user");
    assert_eq!(reason(&status), "safra/TOKEN_MISSING");
}

#[tokio::test]
async fn only_calls_declared_idempotent_are_retried() {
    let retrier = retrier();
    let context = CallContext::default();
    for (path, expected_attempts) in [(ECHO, 3), (ADMIN_ECHO, 1)] {
        let attempts = AtomicU32::new(0);
        let status = retrier
            .call(path, &context, hello(), |_request| {
                attempts.fetch_add(1, Ordering::SeqCst);
                async { Err::<Response<()>, _>(Status::unavailable("down")) }
            })
            .await
            .expect_err("always down");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(attempts.load(Ordering::SeqCst), expected_attempts, "{path}");
    }
    let attempts = AtomicU32::new(0);
    retrier
        .call(ECHO, &context, hello(), |_request| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err::<Response<()>, _>(Status::invalid_argument("bad")) }
        })
        .await
        .expect_err("not retried");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "only UNAVAILABLE is retried"
    );
}

#[tokio::test]
async fn the_retry_budget_keeps_retries_near_a_tenth_of_calls() {
    let retrier = retrier();
    let context = CallContext::default();
    let attempts = AtomicU32::new(0);
    let calls = 200;
    for _ in 0..calls {
        let _ = retrier
            .call(ECHO, &context, hello(), |_request| {
                attempts.fetch_add(1, Ordering::SeqCst);
                async { Err::<Response<()>, _>(Status::unavailable("down")) }
            })
            .await;
    }
    let retries = attempts.load(Ordering::SeqCst) - calls;
    // Ten saved tokens to start with, then one retry per ten calls.
    assert!(
        retries <= 10 + calls / 10 + 1,
        "{retries} retries for {calls} calls"
    );
    assert!(retries >= calls / 10, "{retries} retries for {calls} calls");
}

#[tokio::test]
async fn calls_spread_over_endpoints_and_a_dead_one_is_skipped() {
    let mesh = spawn_mesh(Limits::default()).await;
    let second_seen = Arc::new(Seen::default());
    let (second, _) = spawn_echo(
        &mesh.pki,
        Limits::default(),
        mesh.verifier.clone(),
        second_seen.clone(),
    )
    .await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let endpoints = format!(
        "https://{},{second},dns://localhost:{}",
        mesh.echo,
        dead.port()
    );
    let channel =
        safra::transport::client::mesh_channel(&mesh.pki.tls("gateway"), "wallet", &endpoints)
            .expect("channel");
    let client = safra::testing::echo::v1::echo_service_client::EchoServiceClient::new(channel);
    let retrier = retrier();
    let context = CallContext::background(Duration::from_secs(10));
    for index in 0..40 {
        retrier
            .call(
                ECHO,
                &context,
                EchoRequest {
                    message: format!("m{index}"),
                    ..Default::default()
                },
                |request| {
                    let mut client = client.clone();
                    async move { client.echo(request).await }
                },
            )
            .await
            .expect("every call lands on a live endpoint");
    }
    let (first_count, second_count) = (
        mesh.seen.calls.load(Ordering::SeqCst),
        second_seen.calls.load(Ordering::SeqCst),
    );
    assert_eq!(first_count + second_count, 40);
    assert!(
        first_count > 0 && second_count > 0,
        "{first_count} / {second_count}"
    );
}

/// Waits up to 5 s for `channel` to count `expected` calls in flight.
async fn in_flight_becomes(channel: &safra::transport::client::MeshChannel, expected: usize) {
    for _ in 0..100 {
        if channel.in_flight() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(channel.in_flight(), expected, "calls in flight");
}

#[tokio::test]
async fn the_balancer_counts_a_call_until_its_body_ends_or_is_dropped() {
    use safra::testing::echo::v1::{SlowRequest, StreamEchoRequest};
    use tokio_stream::StreamExt as _;

    let mesh = spawn_mesh(Limits::default()).await;
    let channel = safra::transport::client::mesh_channel(
        &mesh.pki.tls("gateway"),
        "wallet",
        &mesh.echo.to_string(),
    )
    .expect("channel");
    let mut client =
        safra::testing::echo::v1::echo_service_client::EchoServiceClient::new(channel.clone());

    // A finished unary call is no longer counted.
    client.echo(hello()).await.expect("echo");
    assert_eq!(channel.in_flight(), 0);

    // A server stream counts while it is read, past its response headers.
    let mut stream = client
        .stream_echo(StreamEchoRequest { count: 100 })
        .await
        .expect("stream")
        .into_inner();
    stream.next().await.expect("a first message").expect("ok");
    assert_eq!(channel.in_flight(), 1, "an open stream is busy");
    drop(stream);
    in_flight_becomes(&channel, 0).await;

    // A stream read to its end.
    let mut short = client
        .stream_echo(StreamEchoRequest { count: 3 })
        .await
        .expect("stream")
        .into_inner();
    while let Some(message) = short.next().await {
        message.expect("ok");
    }
    assert_eq!(channel.in_flight(), 0, "a stream read to its end");

    // A call its caller drops before the answer came.
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move { slow_client.slow(SlowRequest { delay_ms: 5_000 }).await });
    in_flight_becomes(&channel, 1).await;
    slow.abort();
    assert!(slow.await.is_err(), "cancelled");
    in_flight_becomes(&channel, 0).await;
}

#[tokio::test]
async fn many_long_calls_open_more_connections_and_never_hold_up_another_call() {
    use safra::testing::echo::v1::SlowRequest;

    let mesh = spawn_mesh(Limits::default()).await;
    let channel = safra::transport::client::mesh_channel(
        &mesh.pki.tls("gateway"),
        "wallet",
        &mesh.echo.to_string(),
    )
    .expect("channel");
    let client =
        safra::testing::echo::v1::echo_service_client::EchoServiceClient::new(channel.clone());
    assert_eq!(channel.connections(), 1);

    // Another caller's long call, under way before the flood and after it.
    let mut victim = client.clone();
    let victim = tokio::spawn(async move { victim.slow(SlowRequest { delay_ms: 3_000 }).await });
    in_flight_becomes(&channel, 1).await;

    // More long calls than a server admits on one connection (256): on one
    // connection the rest, and any other call, would wait for them.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let mut client = client.clone();
        slow.spawn(async move { client.slow(SlowRequest { delay_ms: 60_000 }).await });
    }
    in_flight_becomes(&channel, 301).await;
    assert!(
        channel.connections() >= 3,
        "{} connections for 300 calls",
        channel.connections()
    );
    let mut request = Request::new(hello());
    request.set_timeout(Duration::from_secs(20));
    client
        .clone()
        .echo(request)
        .await
        .expect("another call goes through beside them");

    // The flood dropped at once (300 streams reset) ends no other call.
    slow.abort_all();
    while slow.join_next().await.is_some() {}
    victim
        .await
        .expect("joined")
        .expect("the other caller's call ends well");
    // With the load gone, the extra connections close.
    in_flight_becomes(&channel, 0).await;
    assert_eq!(channel.connections(), 1);
}
