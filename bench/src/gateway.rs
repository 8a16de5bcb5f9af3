//! The edge gateway under load: one unary RPC (`AdminEcho` with a bearer
//! token, so the token check, authorization and validation run) direct to
//! the service over gRPC, and through the gateway as gRPC (h2c), grpc-web
//! (HTTP/1.1) and REST/JSON (HTTP/1.1), side by side.
//!
//! - `serve-edge <dir> <addr> <echo-addr>`: the gateway with the test
//!   contracts, forwarding to the full-stack echo server (`serve-full`).
//! - `edge-load <dir> <direct|edge-grpc|grpc-web|rest> <addr> <concurrency> <seconds> <pids>`:
//!   `pids` is a comma-separated list of the server processes whose CPU
//!   time counts (the echo server, plus the gateway when it is in the path).

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context, bail};
use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use safra::{
    identity::auth::{DEFAULT_ISSUER, StaticKeys, TokenVerifier},
    identity::tls::{MeshTls, TlsPaths},
    testing::echo::v1::{AdminEchoRequest, echo_service_client::EchoServiceClient},
    transport::client::MeshChannel,
};
use safra_gateway::{Edge, EdgeSettings};

use crate::{bench_token, load_key, measure, with_bearer};

pub async fn serve(dir: &Path, addr: SocketAddr, echo: SocketAddr) -> anyhow::Result<()> {
    safra::identity::tls::install_crypto_provider();
    // Spans and trace ids as in production; no collector, so no export.
    // SAFRA_BENCH_NO_TELEMETRY=1 leaves them out, to measure their share.
    let untraced = std::env::var_os("SAFRA_BENCH_NO_TELEMETRY").is_some();
    let _telemetry = (!untraced)
        .then(|| {
            safra::observability::telemetry::init(
                &safra::config::LogConfig {
                    format: safra::config::LogFormat::Json,
                    filter: "info".into(),
                    otlp_endpoint: None,
                },
                "bench-edge",
            )
        })
        .transpose()?;
    let key = load_key(dir)?;
    let verifier = Arc::new(TokenVerifier::new(
        DEFAULT_ISSUER,
        Arc::new(StaticKeys(Arc::new(std::sync::RwLock::new(vec![
            key.public_key().clone(),
        ])))),
    ));
    let tls = MeshTls::load(TlsPaths::in_dir(dir, "gateway"))?;
    // Several connections to the service, as production does per endpoint.
    let endpoints = [
        echo.to_string(),
        echo.to_string(),
        echo.to_string(),
        echo.to_string(),
    ];
    let channel = safra::transport::client::mesh_channel(&tls, "wallet", &endpoints.join(","))?;
    let upstreams = HashMap::from([("safra.echo.v1.EchoService".to_owned(), channel)]);
    let edge = Edge::new(
        &safra::testing::pool()?,
        verifier,
        upstreams,
        EdgeSettings {
            rate_limit_rps: 0,
            ..EdgeSettings::default()
        },
    )?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    safra_gateway::serve_router(listener, Arc::new(edge), std::future::pending()).await?;
    Ok(())
}

/// How one worker makes the call.
enum Protocol {
    Grpc(EchoServiceClient<MeshChannel>),
    Edge(EchoServiceClient<tonic::transport::Channel>),
    Http {
        sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        web: bool,
    },
}

async fn http1(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

impl Protocol {
    async fn call(&mut self, token: &str) -> anyhow::Result<()> {
        let message = || AdminEchoRequest {
            message: "ping".into(),
        };
        match self {
            Protocol::Grpc(client) => {
                client.admin_echo(with_bearer(message(), token)?).await?;
            }
            Protocol::Edge(client) => {
                client.admin_echo(with_bearer(message(), token)?).await?;
            }
            Protocol::Http { sender, web } => {
                let bearer = format!("Bearer {token}");
                let request = if *web {
                    let payload = message().encode_to_vec();
                    let mut framed = BytesMut::with_capacity(payload.len() + 5);
                    framed.put_u8(0);
                    framed.put_u32(u32::try_from(payload.len())?);
                    framed.put_slice(&payload);
                    http::Request::post("/safra.echo.v1.EchoService/AdminEcho")
                        .header("host", "bench")
                        .header("content-type", "application/grpc-web+proto")
                        .header("x-grpc-web", "1")
                        .header("authorization", bearer)
                        .body(Full::new(framed.freeze()))?
                } else {
                    http::Request::post("/v1/echo:admin")
                        .header("host", "bench")
                        .header("content-type", "application/json")
                        .header("authorization", bearer)
                        .body(Full::new(Bytes::from_static(br#"{"message":"ping"}"#)))?
                };
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let ok = response.status() == http::StatusCode::OK;
                let grpc_status = response
                    .headers()
                    .get("grpc-status")
                    .map(|value| value.as_bytes().to_vec());
                let body = response.into_body().collect().await?.to_bytes();
                if !ok {
                    bail!("HTTP status not OK");
                }
                // grpc-web: the status travels in the trailer frame.
                if *web
                    && grpc_status.as_deref() != Some(b"0")
                    && !body
                        .windows(b"grpc-status:0".len())
                        .any(|window| window == b"grpc-status:0")
                {
                    bail!("grpc-web call failed");
                }
            }
        }
        Ok(())
    }
}

pub async fn load(
    dir: &Path,
    mode: &str,
    addr: SocketAddr,
    concurrency: usize,
    seconds: u64,
    pids: &str,
) -> anyhow::Result<()> {
    safra::identity::tls::install_crypto_provider();
    let pids: Vec<u32> = pids
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("pids: a comma-separated list")?;
    let token = bench_token(dir)?;
    // gRPC shares 4 HTTP/2 connections; HTTP/1.1 needs one per worker.
    let mut shared = Vec::new();
    for _ in 0..4 {
        match mode {
            "direct" => {
                let tls = MeshTls::load(TlsPaths::in_dir(dir, "gateway"))?;
                shared.push(Protocol::Grpc(EchoServiceClient::new(
                    safra::transport::client::mesh_channel(&tls, "wallet", &addr.to_string())?,
                )));
            }
            "edge-grpc" => shared.push(Protocol::Edge(EchoServiceClient::new(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            ))),
            "grpc-web" | "rest" => {}
            other => bail!("unknown mode {other}"),
        }
    }
    let mut callers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        callers.push(match (mode, shared.get(worker % 4)) {
            ("grpc-web" | "rest", _) => Protocol::Http {
                sender: http1(addr).await?,
                web: mode == "grpc-web",
            },
            (_, Some(Protocol::Grpc(client))) => Protocol::Grpc(client.clone()),
            (_, Some(Protocol::Edge(client))) => Protocol::Edge(client.clone()),
            _ => bail!("no client for {mode}"),
        });
    }
    // Warm up: connections, TLS, the token caches.
    for caller in &mut callers {
        caller.call(&token).await?;
    }

    let callers = callers
        .into_iter()
        .map(|caller| Worker {
            caller,
            token: token.clone(),
        })
        .collect();
    measure(mode, callers, seconds, &pids).await
}

/// A caller and the token it sends.
struct Worker {
    caller: Protocol,
    token: String,
}

impl crate::Caller for Worker {
    async fn call(&mut self) -> bool {
        self.caller.call(&self.token).await.is_ok()
    }
}
