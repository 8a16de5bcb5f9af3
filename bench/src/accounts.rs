//! The accounts service under load: Login's cost (argon2id by design, and
//! the same for a known and an unknown e-mail) and GetMe's throughput
//! (token verification plus one indexed read).
//!
//! - `serve-accounts <dir> <addr> <database-url>`: the real accounts service
//!   (real argon2id, the whole mesh stack) on a database it migrates.
//! - `accounts-login <dir> <addr> <rounds> <server-pid>`: sequential logins
//!   at concurrency 1, interleaving a right password, a wrong password for a
//!   known e-mail and an unknown e-mail; then Login's throughput.
//! - `accounts-getme <dir> <addr> <concurrency> <seconds> <server-pid>`:
//!   GetMe with one signed-in user's token from `concurrency` streams.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use safra::{
    accounts::v1::{
        GetMeRequest, LoginRequest, RegisterRequest, Role,
        accounts_service_client::AccountsServiceClient,
        accounts_service_server::AccountsServiceServer,
    },
    config::{DatabaseConfig, Secret},
    data::db::Database,
    identity::auth::DEFAULT_ISSUER,
    identity::auth::TokenVerifier,
    identity::certs::CertDir,
    identity::tls::{MeshTls, TlsPaths},
    mesh::Service,
    transport::client::MeshChannel,
    transport::server::MeshServer,
};
use safra_accounts::{
    api::{Accounts, TokenSettings},
    domain::{Argon2id, HashingPool, KeyEncryption},
};
use tonic::Request;

use crate::{Caller, cpu_seconds, measure, percentile, with_bearer};

const PASSWORD: &str = "correct horse battery staple";

pub async fn serve(dir: &Path, addr: SocketAddr, database_url: &str) -> anyhow::Result<()> {
    safra::identity::tls::install_crypto_provider();
    let certs = CertDir::new(dir);
    if !certs.ca_cert().exists() {
        certs.init()?;
    }
    let url = Secret::new(database_url);
    safra::data::db::migrate_up(&url, &safra_accounts::MIGRATIONS).await?;
    let database = Database::connect(&DatabaseConfig {
        url,
        pool_size: 10,
        acquire_timeout_ms: 2_000,
        statement_timeout_ms: 5_000,
        prepared_statements: true,
    })
    .await?;
    // As `safra serve accounts` runs it: as many hashes at once as the
    // process has cores (at most 4); pinned to one core, that is one.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let hashing = HashingPool::new(Arc::new(Argon2id::new()?), cores.min(4))?;
    let accounts = Accounts::new(
        database,
        hashing,
        KeyEncryption::new(&[7_u8; 32])?,
        TokenSettings::default(),
    )
    .await?;
    let verifier = Arc::new(TokenVerifier::new(DEFAULT_ISSUER, accounts.key_source()));
    let tls = MeshTls::load(TlsPaths::in_dir(dir, "accounts"))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    MeshServer::new(Service::Accounts, tls, verifier)?
        .add_service(AccountsServiceServer::new(accounts))
        .serve(listener, &[], std::future::pending())
        .await?;
    Ok(())
}

/// A client as the gateway is: its certificate, so that `x-forwarded-for`
/// is trusted and each login can come from its own address (the per-address
/// throttle would otherwise lock the run after 20 failures).
fn client(dir: &Path, addr: SocketAddr) -> anyhow::Result<AccountsServiceClient<MeshChannel>> {
    safra::identity::tls::install_crypto_provider();
    let tls = MeshTls::load(TlsPaths::in_dir(dir, "gateway"))?;
    Ok(AccountsServiceClient::new(
        safra::transport::client::mesh_channel(&tls, "accounts", &addr.to_string())?,
    ))
}

async fn register(
    client: &mut AccountsServiceClient<MeshChannel>,
    email: &str,
) -> anyhow::Result<()> {
    client
        .register(RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Bench".into(),
            role: Role::Investor as i32,
        })
        .await
        .with_context(|| format!("register {email}"))?;
    Ok(())
}

fn login_from(email: &str, password: &str, address: u32) -> anyhow::Result<Request<LoginRequest>> {
    let mut request = Request::new(LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    let [_, b, c, d] = address.to_be_bytes();
    request
        .metadata_mut()
        .insert("x-forwarded-for", format!("10.{b}.{c}.{d}").parse()?);
    Ok(request)
}

fn summary(label: &str, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    let mean =
        latencies.iter().sum::<Duration>() / u32::try_from(latencies.len().max(1)).unwrap_or(1);
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        latencies.len(),
        ms(mean),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
}

pub async fn login(
    dir: &Path,
    addr: SocketAddr,
    rounds: u32,
    server_pid: u32,
) -> anyhow::Result<()> {
    let mut client = client(dir, addr)?;
    let run = std::process::id();
    // Four failures per account stay under the per-account throttle (5).
    let accounts = rounds.div_ceil(4).max(1);
    for index in 0..accounts {
        register(&mut client, &format!("bench-{run}-{index}@example.com")).await?;
    }
    let mut right = Vec::new();
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    let mut address = 0_u32;
    for round in 0..rounds {
        let email = format!("bench-{run}-{}@example.com", round / 4);
        for (password, email, latencies, succeeds) in [
            (PASSWORD, email.clone(), &mut right, true),
            ("wrong password here", email.clone(), &mut wrong, false),
            (
                PASSWORD,
                format!("nobody-{run}-{round}@example.com"),
                &mut unknown,
                false,
            ),
        ] {
            address += 1;
            let request = login_from(&email, password, address)?;
            let begun = Instant::now();
            let outcome = client.login(request).await;
            let elapsed = begun.elapsed();
            match (outcome, succeeds) {
                (Ok(_), true) => {}
                (Err(status), false) if status.code() == tonic::Code::Unauthenticated => {}
                (other, _) => anyhow::bail!("unexpected login outcome for {email}: {other:?}"),
            }
            latencies.push(elapsed);
        }
    }
    println!("| login (concurrency 1) | calls | mean ms | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    summary("known e-mail, right password", right);
    summary("known e-mail, wrong password", wrong);
    summary("unknown e-mail", unknown);

    // Throughput: argon2id bounds it; the pool hashes four at once.
    let seconds = 10;
    let cpu_before = cpu_seconds(server_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..8_u32 {
        let mut client = client.clone();
        let email = format!("bench-{run}-{}@example.com", worker % accounts);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let begun = Instant::now();
                if client
                    .login(login_from(&email, PASSWORD, worker)?)
                    .await
                    .is_ok()
                {
                    latencies.push(begun.elapsed());
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.append(&mut task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server_pid)? - cpu_before;
    latencies.sort_unstable();
    println!();
    println!(
        "| login throughput | concurrency | RPS | p50 ms | p99 ms | server CPU s | logins per server CPU-second |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| right password | 8 | {:.1} | {:.1} | {:.1} | {cpu:.2} | {:.1} |",
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        if cpu > 0.0 {
            latencies.len() as f64 / cpu
        } else {
            0.0
        },
    );
    Ok(())
}

pub async fn get_me(
    dir: &Path,
    addr: SocketAddr,
    concurrency: usize,
    seconds: u64,
    server_pid: u32,
) -> anyhow::Result<()> {
    // Several connections, as the gateway keeps.
    let clients = (0..4)
        .map(|_| client(dir, addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut client = clients[0].clone();
    let email = format!("getme-{}@example.com", std::process::id());
    register(&mut client, &email).await?;
    let token = client
        .login(login_from(&email, PASSWORD, 1)?)
        .await?
        .into_inner()
        .access_token;
    // Warm up: connections, TLS, the verified-token cache.
    for client in &clients {
        client
            .clone()
            .get_me(with_bearer(GetMeRequest {}, &token)?)
            .await?;
    }

    let callers = (0..concurrency)
        .map(|worker| GetMe {
            client: clients[worker % clients.len()].clone(),
            token: token.clone(),
        })
        .collect();
    measure("GetMe", callers, seconds, &[server_pid]).await
}

/// One stream of GetMe calls with a signed-in user's token.
struct GetMe {
    client: AccountsServiceClient<MeshChannel>,
    token: String,
}

impl Caller for GetMe {
    async fn call(&mut self) -> bool {
        match with_bearer(GetMeRequest {}, &self.token) {
            Ok(request) => self.client.get_me(request).await.is_ok(),
            Err(_) => false,
        }
    }
}
