//! Safra's benchmark driver: the servers under test and the load generator,
//! in one binary so that `bench/run.sh` can pin each to its own core.
//!
//! - `serve-bare <dir> <addr>`: the echo contract on a bare tonic server
//!   (h2c, no layers): the baseline.
//! - `serve-bare-tls <dir> <addr>`: the bare server over the mesh's mutual
//!   TLS only (no other stage), to separate encryption's cost.
//! - `serve-stock-tls <dir> <addr>`: the bare server over plain tokio-rustls
//!   (mutual TLS without the mesh's write coalescing): stock tonic over TLS.
//! - `serve-full <dir> <addr>`: the same handler behind the whole mesh stack
//!   (mTLS, JWT, authorization, validation, metrics, tracing spans with trace
//!   ids; no OTLP collector, so nothing is exported).
//! - `load <dir> <bare|bare-token|bare-tls|stock-tls|full> <addr> <concurrency> <seconds> <server-pid>`:
//!   unary calls from `concurrency` concurrent streams through the typed
//!   stubs (tonic's channel, or `MeshChannel` over TLS); prints RPS, p50,
//!   p99 and requests per server CPU-second (from the server's /proc stat).
//!   `bare-token` sends the bare server the same bearer header as `full`.
//! - `load-raw`: the same with the lean caller of `raw.rs`.
//! - `jwt <seconds>`: token verification cost, cold and cached.
//! - `handshakes <dir> <addr> <seconds> <server-pid>`: full mTLS handshakes
//!   per second and per server CPU-second.
//!
//! - `serve-accounts`, `accounts-login`, `accounts-getme`: the accounts
//!   service; see `accounts.rs`.
//! - `serve-edge`, `edge-load`: the gateway; see `gateway.rs`.
//! - `events-latency`, `events-throughput`, `events-drain`: events from an
//!   outbox commit to a subscriber's handler, on each transport; see
//!   `events.rs`.
//! - `distribute <holders>`: one payment to many holders, end to end; see
//!   `distribution.rs`.
//!
//! `<dir>` holds the throw-away CA, certificates and the signing key both
//! sides share; `serve-*` create it.

#![allow(
    clippy::print_stdout,
    reason = "the results table is the program's output"
)]

/// The `safra` binary's allocator, so that servers run here as they run there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod accounts;
mod distribution;
mod events;
mod gateway;
mod raw;
mod stock_tls;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use safra::{
    identity::auth::{
        AuthenticatedUser, DEFAULT_ISSUER, SigningKey, StaticKeys, TokenSigner, TokenVerifier,
    },
    identity::certs::CertDir,
    identity::tls::{MeshTls, TlsPaths},
    mesh::Service,
    testing::echo::v1::{
        AdminEchoRequest, EchoRequest, EchoResponse, InternalEchoRequest, SlowRequest,
        StreamEchoRequest, WhoAmIRequest,
        echo_service_client::EchoServiceClient,
        echo_service_server::{EchoService, EchoServiceServer},
    },
    transport::client::{MeshChannel, MeshConnector},
    transport::server::MeshServer,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The handler both servers run: it answers with what it was sent.
struct Echo;

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn answer(message: String, user: Option<&AuthenticatedUser>) -> Response<EchoResponse> {
    Response::new(EchoResponse {
        message,
        user_id: user.map(|user| user.user_id.clone()).unwrap_or_default(),
        ..EchoResponse::default()
    })
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let user = AuthenticatedUser::of(&request).cloned();
        Ok(answer(request.into_inner().message, user.as_ref()))
    }
    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        let user = AuthenticatedUser::of(&request).cloned();
        Ok(answer(String::new(), user.as_ref()))
    }
    async fn admin_echo(
        &self,
        request: Request<AdminEchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        let user = AuthenticatedUser::of(&request).cloned();
        Ok(answer(request.into_inner().message, user.as_ref()))
    }
    async fn internal_echo(
        &self,
        request: Request<InternalEchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        Ok(answer(request.into_inner().message, None))
    }
    type StreamEchoStream = EchoStream;
    async fn stream_echo(
        &self,
        _request: Request<StreamEchoRequest>,
    ) -> Result<Response<Self::StreamEchoStream>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }
    async fn slow(&self, _request: Request<SlowRequest>) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented("not benchmarked"))
    }
}

fn signing_key_path(dir: &Path) -> PathBuf {
    dir.join("signing.pk8")
}

/// Makes the CA, certificates and signing key the servers and the load share.
fn prepare(dir: &Path) -> anyhow::Result<SigningKey> {
    safra::identity::tls::install_crypto_provider();
    let certs = CertDir::new(dir);
    if !certs.ca_cert().exists() {
        certs.init()?;
    }
    let key = SigningKey::generate("bench-key")?;
    std::fs::write(signing_key_path(dir), key.pkcs8())?;
    Ok(key)
}

fn load_key(dir: &Path) -> anyhow::Result<SigningKey> {
    let pkcs8 = std::fs::read(signing_key_path(dir)).context("run serve-full first")?;
    Ok(SigningKey::from_pkcs8("bench-key", &pkcs8)?)
}

async fn serve_bare(dir: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    prepare(dir)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await?;
    Ok(())
}

/// The bare server behind the mesh's mutual TLS only: separates the cost of
/// encryption from the cost of the other stages.
async fn serve_bare_tls(dir: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    use tokio_stream::StreamExt as _;

    prepare(dir)?;
    let tls = MeshTls::load(TlsPaths::in_dir(dir, "wallet"))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let incoming = tokio_stream::wrappers::ReceiverStream::new(safra::identity::tls::accept(
        listener,
        tls.server_config()?,
    ))
    .map(Ok::<_, std::io::Error>);
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

async fn serve_full(dir: &Path, addr: SocketAddr) -> anyhow::Result<()> {
    let key = prepare(dir)?;
    // Spans and trace ids as in production; no collector, so no export.
    let _telemetry = safra::observability::telemetry::init(
        &safra::config::LogConfig {
            format: safra::config::LogFormat::Json,
            filter: "info".into(),
            otlp_endpoint: None,
        },
        "bench-full",
    )?;
    let verifier = Arc::new(TokenVerifier::new(
        DEFAULT_ISSUER,
        Arc::new(StaticKeys(Arc::new(std::sync::RwLock::new(vec![
            key.public_key().clone(),
        ])))),
    ));
    let tls = MeshTls::load(TlsPaths::in_dir(dir, "wallet"))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    MeshServer::new(Service::Wallet, tls, verifier)?
        .with_contracts(safra::testing::pool()?, safra::testing::FILE_DESCRIPTOR_SET)
        .add_service(EchoServiceServer::new(Echo))
        .serve(listener, &[], std::future::pending())
        .await?;
    Ok(())
}

/// User plus system CPU seconds a process has used, from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: f64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|field| field.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / 100.0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (fraction * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One stream of calls under load: makes one call, says whether it worked.
trait Caller: Send + 'static {
    fn call(&mut self) -> impl Future<Output = bool> + Send;
}

/// Runs every caller in its own task until `seconds` have passed, then
/// prints one table row: `label`, concurrency, RPS, p50, p99, the CPU the
/// `pids` used meanwhile and requests per server CPU-second, errors.
async fn measure<C: Caller>(
    label: &str,
    callers: Vec<C>,
    seconds: u64,
    pids: &[u32],
) -> anyhow::Result<()> {
    let concurrency = callers.len();
    let cpu = || -> anyhow::Result<f64> { pids.iter().map(|pid| cpu_seconds(*pid)).sum() };
    let cpu_before = cpu()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(concurrency);
    for mut caller in callers {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0_u64;
            while Instant::now() < deadline {
                let begun = Instant::now();
                if caller.call().await {
                    latencies.push(begun.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut own, own_errors) = task.await?;
        latencies.append(&mut own);
        errors += own_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu()? - cpu_before;
    latencies.sort_unstable();
    let ok = latencies.len() as f64;
    println!(
        "| {label} | {concurrency} | {:.0} | {:.3} | {:.3} | {cpu:.2} | {:.0} | {errors} |",
        ok / elapsed,
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        if cpu > 0.0 { ok / cpu } else { 0.0 },
    );
    Ok(())
}

#[derive(Clone)]
enum Client {
    /// The bare server; with a token, the same bearer header the full stack
    /// gets (ignored), to separate the protocol's cost from the stack's.
    Bare(EchoServiceClient<tonic::transport::Channel>, Option<String>),
    Full(EchoServiceClient<MeshChannel>, String),
    /// The bare-over-mTLS server, called like the full one but on `Echo`.
    BareTls(EchoServiceClient<MeshChannel>, String),
}

fn with_bearer<T>(message: T, token: &str) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::internal("token is not ASCII"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn bench_token(dir: &Path) -> anyhow::Result<String> {
    Ok(TokenSigner::new(load_key(dir)?, DEFAULT_ISSUER)
        .sign("bench-user", "admin", Duration::from_secs(3600))?
        .0)
}

impl Caller for Client {
    async fn call(&mut self) -> bool {
        self.send().await.is_ok()
    }
}

impl Client {
    async fn send(&mut self) -> Result<(), Status> {
        let echo = || EchoRequest {
            message: "ping".into(),
            ..Default::default()
        };
        match self {
            Client::Bare(client, None) => client.echo(echo()).await.map(drop),
            Client::Bare(client, Some(token)) => {
                client.echo(with_bearer(echo(), token)?).await.map(drop)
            }
            Client::BareTls(client, token) => {
                client.echo(with_bearer(echo(), token)?).await.map(drop)
            }
            Client::Full(client, token) => {
                let request = with_bearer(
                    AdminEchoRequest {
                        message: "ping".into(),
                    },
                    token,
                )?;
                client.admin_echo(request).await.map(drop)
            }
        }
    }
}

/// How many HTTP/2 connections a load run opens: several, as the gateway
/// keeps, so that one connection's lock does not cap the run.
fn connections(concurrency: usize) -> usize {
    4.min(concurrency.max(1))
}

/// `concurrency` callers sharing `connected` round robin.
fn spread<C: Clone>(connected: &[C], concurrency: usize) -> Vec<C> {
    connected
        .iter()
        .cycle()
        .take(concurrency)
        .cloned()
        .collect()
}

/// One load run's settings, as `load` and `load-raw` take them.
struct LoadRun<'a> {
    dir: &'a Path,
    mode: &'a str,
    addr: SocketAddr,
    concurrency: usize,
    seconds: u64,
    server_pid: u32,
}

/// Through the typed stubs.
async fn load(run: LoadRun<'_>) -> anyhow::Result<()> {
    safra::identity::tls::install_crypto_provider();
    let mut clients = Vec::new();
    for _ in 0..connections(run.concurrency) {
        clients.push(match run.mode {
            "bare" | "bare-token" => Client::Bare(
                EchoServiceClient::new(
                    tonic::transport::Endpoint::from_shared(format!("http://{}", run.addr))?
                        .connect()
                        .await?,
                ),
                (run.mode == "bare-token")
                    .then(|| bench_token(run.dir))
                    .transpose()?,
            ),
            "full" | "bare-tls" | "stock-tls" => {
                let token = bench_token(run.dir)?;
                let tls = MeshTls::load(TlsPaths::in_dir(run.dir, "gateway"))?;
                let channel =
                    safra::transport::client::mesh_channel(&tls, "wallet", &run.addr.to_string())?;
                if run.mode == "full" {
                    Client::Full(EchoServiceClient::new(channel), token)
                } else {
                    Client::BareTls(EchoServiceClient::new(channel), token)
                }
            }
            other => bail!("unknown mode {other}"),
        });
    }
    // Warm up: connections, TLS, token cache.
    for client in &mut clients {
        client.send().await?;
    }

    measure(
        run.mode,
        spread(&clients, run.concurrency),
        run.seconds,
        &[run.server_pid],
    )
    .await
}

/// As [`load`], with the lean caller of `raw.rs`: the same pre-encoded call
/// for every mode, so only the server differs.
async fn load_raw(run: LoadRun<'_>) -> anyhow::Result<()> {
    safra::identity::tls::install_crypto_provider();
    let tls = match run.mode {
        "bare" | "bare-token" => None,
        "bare-tls" | "stock-tls" | "full" => {
            Some(MeshTls::load(TlsPaths::in_dir(run.dir, "gateway"))?)
        }
        other => bail!("unknown mode {other}"),
    };
    let token = (run.mode != "bare")
        .then(|| bench_token(run.dir))
        .transpose()?;
    let path = if run.mode == "full" {
        "/safra.echo.v1.EchoService/AdminEcho"
    } else {
        "/safra.echo.v1.EchoService/Echo"
    };
    // AdminEchoRequest's only field is EchoRequest's field 1: one encoding
    // serves both methods.
    let message = EchoRequest {
        message: "ping".into(),
        ..Default::default()
    };
    let mut callers = Vec::new();
    for _ in 0..connections(run.concurrency) {
        let mut caller =
            raw::connect(run.addr, tls.as_ref(), path, &message, token.as_deref()).await?;
        if !caller.call().await {
            bail!("the warm-up call failed");
        }
        callers.push(caller);
    }
    measure(
        &format!("{} (lean client)", run.mode),
        spread(&callers, run.concurrency),
        run.seconds,
        &[run.server_pid],
    )
    .await
}

async fn jwt(seconds: u64) -> anyhow::Result<()> {
    let key = SigningKey::generate("bench-key")?;
    let public = key.public_key().clone();
    let signer = TokenSigner::new(key, DEFAULT_ISSUER);
    let keys = Arc::new(StaticKeys(Arc::new(std::sync::RwLock::new(vec![public]))));
    // Cold: every token is new, so each call checks a signature.
    let tokens: Vec<String> = (0..20_000)
        .map(|_| {
            signer
                .sign("u", "investor", Duration::from_secs(600))
                .map(|(token, _)| token)
        })
        .collect::<Result<_, _>>()?;
    let verifier = TokenVerifier::new(DEFAULT_ISSUER, keys.clone());
    verifier.verify(&tokens[0]).await?;
    let started = Instant::now();
    let mut cold = 0_u32;
    for token in tokens.iter().skip(1) {
        verifier.verify(token).await?;
        cold += 1;
        if started.elapsed() > Duration::from_secs(seconds) {
            break;
        }
    }
    let cold_each = started.elapsed() / cold;
    // Cached: the same token again and again.
    let started = Instant::now();
    let mut cached = 0_u32;
    while started.elapsed() < Duration::from_secs(seconds) {
        verifier.verify(&tokens[0]).await?;
        cached += 1;
    }
    let cached_each = started.elapsed() / cached;
    println!(
        "| JWT verification, cold (signature checked) | {:.1} µs | {} calls |",
        cold_each.as_secs_f64() * 1e6,
        cold
    );
    println!(
        "| JWT verification, cached (SHA-256 lookup) | {:.2} µs | {} calls |",
        cached_each.as_secs_f64() * 1e6,
        cached
    );
    Ok(())
}

async fn handshakes(
    dir: &Path,
    addr: SocketAddr,
    seconds: u64,
    server_pid: u32,
) -> anyhow::Result<()> {
    use tower::Service as _;

    safra::identity::tls::install_crypto_provider();
    let tls = MeshTls::load(TlsPaths::in_dir(dir, "gateway"))?;
    let mut connector = MeshConnector::new(&tls, "wallet")?;
    let uri: tonic::codegen::http::Uri = format!("http://{addr}").parse()?;
    let cpu_before = cpu_seconds(server_pid)?;
    let started = Instant::now();
    let mut count = 0_u32;
    while started.elapsed() < Duration::from_secs(seconds) {
        drop(connector.call(uri.clone()).await?);
        count += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server_pid)? - cpu_before;
    println!(
        "| mTLS handshakes (one client, sequential) | {:.0} /s | {:.0} per server CPU-second |",
        f64::from(count) / elapsed,
        if cpu > 0.0 {
            f64::from(count) / cpu
        } else {
            0.0
        }
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |index: usize| -> anyhow::Result<&str> {
        args.get(index).map(String::as_str).with_context(|| {
            format!("missing argument {index}; see the header of bench/src/main.rs")
        })
    };
    match arg(0)? {
        "serve-bare" => serve_bare(Path::new(arg(1)?), arg(2)?.parse()?).await,
        "serve-bare-tls" => serve_bare_tls(Path::new(arg(1)?), arg(2)?.parse()?).await,
        "serve-stock-tls" => stock_tls::serve(Path::new(arg(1)?), arg(2)?.parse()?).await,
        "serve-full" => serve_full(Path::new(arg(1)?), arg(2)?.parse()?).await,
        command @ ("load" | "load-raw") => {
            let run = LoadRun {
                dir: Path::new(arg(1)?),
                mode: arg(2)?,
                addr: arg(3)?.parse()?,
                concurrency: arg(4)?.parse()?,
                seconds: arg(5)?.parse()?,
                server_pid: arg(6)?.parse()?,
            };
            if command == "load" {
                load(run).await
            } else {
                load_raw(run).await
            }
        }
        "jwt" => jwt(arg(1)?.parse()?).await,
        "handshakes" => {
            handshakes(
                Path::new(arg(1)?),
                arg(2)?.parse()?,
                arg(3)?.parse()?,
                arg(4)?.parse()?,
            )
            .await
        }
        "serve-accounts" => accounts::serve(Path::new(arg(1)?), arg(2)?.parse()?, arg(3)?).await,
        "accounts-login" => {
            accounts::login(
                Path::new(arg(1)?),
                arg(2)?.parse()?,
                arg(3)?.parse()?,
                arg(4)?.parse()?,
            )
            .await
        }
        "accounts-getme" => {
            accounts::get_me(
                Path::new(arg(1)?),
                arg(2)?.parse()?,
                arg(3)?.parse()?,
                arg(4)?.parse()?,
                arg(5)?.parse()?,
            )
            .await
        }
        "serve-edge" => {
            gateway::serve(Path::new(arg(1)?), arg(2)?.parse()?, arg(3)?.parse()?).await
        }
        "edge-load" => {
            gateway::load(
                Path::new(arg(1)?),
                arg(2)?,
                arg(3)?.parse()?,
                arg(4)?.parse()?,
                arg(5)?.parse()?,
                arg(6)?,
            )
            .await
        }
        "distribute" => distribution::distribute(arg(1)?.parse()?).await,
        "events-latency" => events::latency(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?).await,
        "events-throughput" => {
            let per_transaction = match arg(4) {
                Ok(value) => value.parse()?,
                Err(_) => 1,
            };
            events::throughput(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?, per_transaction).await
        }
        "events-drain" => events::drain_outbox(arg(1)?, arg(2)?.parse()?).await,
        other => bail!("unknown command {other}; see the header of bench/src/main.rs"),
    }
}
