//! `safra serve <name>`: one service or the gateway, configured from the
//! environment, stopping gracefully on a signal.

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use safra::{
    accounts::v1::accounts_service_server::AccountsServiceServer,
    config::{Environment, GatewayConfig, Reader, ServiceConfig, peer_endpoint},
    data::db::Database,
    distribution::v1::distribution_service_server::DistributionServiceServer,
    identity::auth::TokenVerifier,
    identity::tls::{MeshTls, TlsPaths},
    jobs::v1::jobs_service_server::JobsServiceServer,
    marketplace::v1::marketplace_service_server::MarketplaceServiceServer,
    mesh::Service,
    notifications::v1::notifications_service_server::NotificationsServiceServer,
    observability::admin::{Check, CheckFuture},
    observability::telemetry,
    transport::client::AccountsJwks,
    transport::client::retry::{Retrier, RetryPolicy},
    transport::server::{self, MeshServer},
    wallet::v1::wallet_service_server::WalletServiceServer,
};

use crate::shutdown;

/// What `safra serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessName {
    /// A domain service.
    Service(Service),
    /// The edge gateway.
    Gateway,
}

impl FromStr for ProcessName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        if name == "gateway" {
            return Ok(ProcessName::Gateway);
        }
        name.parse()
            .map(ProcessName::Service)
            .map_err(|_| {
                format!("unknown process '{name}' (expected gateway, accounts, marketplace, wallet, distribution or notifications)")
            })
    }
}

/// Runs `name` until it is told to stop.
pub async fn run(name: ProcessName) -> anyhow::Result<()> {
    let environment = Environment::load()?;
    let reader = Reader::new(&environment);
    let supervised = reader.optional(shutdown::EXIT_ON_STDIN_EOF)?.is_some();
    match name {
        ProcessName::Service(service) => {
            let config = ServiceConfig::read(service, reader)?;
            let telemetry = telemetry::init(&config.log, service.name())?;
            let tls = load_tls(service.name(), &config.tls, reader)?;
            let listener = server::bind(config.listen_addr)
                .await
                .with_context(|| format!("{service}"))?;
            let admin = server::bind(config.admin_addr)
                .await
                .with_context(|| format!("{service}: SAFRA_ADMIN_ADDR"))?;
            // Refuse to serve on a database we cannot reach; the pool lives as
            // long as the process, for the handlers the service issues add.
            let database = Database::connect(&config.database)
                .await
                .with_context(|| format!("{service}: DATABASE_URL"))?;
            let keys =
                safra::transport::client::mesh_channel(&tls, "accounts", &config.accounts_url)
                    .context("SAFRA_ACCOUNTS_URL")?;
            let verifier = Arc::new(TokenVerifier::new(
                config.jwt_issuer.clone(),
                Arc::new(AccountsJwks::new(keys)),
            ));
            tracing::info!(%service, addr = %config.listen_addr, admin = %config.admin_addr, "serving");
            let checks = vec![database_check(database.clone())];
            // One stop signal, for the server and any background task.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown::signalled(supervised).await;
                let _ = stop.send(true);
            });
            // Events leave the outbox for the bus, when there is one, and the
            // service's subscribers follow it.
            let bus = match (&config.broker, &config.bus_database) {
                (Some(broker), _) => {
                    let mut rabbit = safra::bus::rabbit::RabbitBus::new(
                        broker.clone(),
                        config.broker_namespace.clone(),
                    );
                    for subscription in safra::bus::subscriptions::MESH {
                        rabbit = rabbit
                            .declaring(subscription.subscriber, subscription.types.iter().copied());
                    }
                    Some(safra::bus::Bus::Rabbit(rabbit))
                }
                (None, Some(bus)) => {
                    let bus = Database::connect(bus)
                        .await
                        .with_context(|| format!("{service}: SAFRA_BUS_DATABASE_URL"))?;
                    Some(safra::bus::Bus::Postgres(safra::bus::postgres::PgBus::new(
                        bus,
                    )))
                }
                (None, None) => None,
            };
            if let Some(bus) = &bus {
                tracing::info!(%service, transport = bus.transport(), "events on the bus");
                tokio::spawn(safra::bus::relay::run(
                    database.clone(),
                    bus.clone(),
                    when_stopped(stopped.clone()),
                ));
            }
            let retention = retention_settings(reader)?;
            let retention_metrics = safra::bus::retention::RetentionMetrics::default();
            if let Some(bus) = &bus {
                let log = match bus {
                    safra::bus::Bus::Postgres(log) => Some(log.database().clone()),
                    safra::bus::Bus::Rabbit(_) => None,
                };
                tokio::spawn(safra::bus::retention::run(
                    database.clone(),
                    log,
                    retention,
                    retention_metrics.clone(),
                    when_stopped(stopped.clone()),
                ));
            }
            let retries = safra::bus::subscriber::Retries::default();
            let jobs_database = database.clone();
            let mut pools = vec![("service", database.clone())];
            if let Some(safra::bus::Bus::Postgres(log)) = &bus {
                pools.push(("bus", log.database().clone()));
            }
            let mut subscribers = Vec::new();
            let server = match service {
                Service::Accounts => {
                    // Accounts verifies the tokens it signs with the keys it publishes.
                    let accounts = accounts(&config, reader, database).await?;
                    let verifier = Arc::new(TokenVerifier::new(
                        config.jwt_issuer.clone(),
                        accounts.key_source(),
                    ));
                    let metrics = accounts.clone();
                    MeshServer::new(service, tls, verifier)?
                        .with_metrics(move |registry| metrics.register_metrics(registry))
                        .add_service(AccountsServiceServer::new(accounts))
                }
                Service::Marketplace => {
                    let marketplace = marketplace(reader, &tls, database)?;
                    subscribers = marketplace.subscribers(retries);
                    tokio::spawn(
                        marketplace
                            .clone()
                            .run_background(when_stopped(stopped.clone())),
                    );
                    MeshServer::new(service, tls, verifier)?
                        .add_service(MarketplaceServiceServer::new(marketplace))
                }
                Service::Wallet => {
                    let wallet = wallet(reader, &tls, database)?;
                    MeshServer::new(service, tls, verifier)?
                        .add_service(WalletServiceServer::new(wallet))
                }
                Service::Distribution => {
                    let distributions = distribution(reader, &tls, database)?;
                    subscribers = distributions.subscribers(retries);
                    tokio::spawn(
                        distributions
                            .clone()
                            .run_credits(when_stopped(stopped.clone())),
                    );
                    MeshServer::new(service, tls, verifier)?
                        .add_service(DistributionServiceServer::new(distributions))
                }
                Service::Notifications => {
                    let heartbeat = reader.parse_or(
                        "SAFRA_NOTIFICATIONS_HEARTBEAT_SECS",
                        15_u64,
                        "a whole number of seconds",
                    )?;
                    let hub = safra_notifications::api::Hub::listen(database.clone());
                    let defaults = safra_notifications::api::StreamLimits::default();
                    let per_user = reader.parse_or(
                        "SAFRA_NOTIFICATIONS_STREAMS_PER_USER",
                        defaults.per_user,
                        "a whole number",
                    )?;
                    let lifetime = reader.parse_or(
                        "SAFRA_NOTIFICATIONS_STREAM_LIFETIME_SECS",
                        defaults.lifetime.as_secs(),
                        "a whole number of seconds",
                    )?;
                    let notifications = safra_notifications::api::Notifications::new(
                        database,
                        hub,
                        Duration::from_secs(heartbeat.max(1)),
                        stopped.clone(),
                    )
                    .with_stream_limits(
                        safra_notifications::api::StreamLimits {
                            per_user: per_user.max(1),
                            lifetime: Duration::from_secs(lifetime.max(1)),
                        },
                    );
                    subscribers = notifications.subscribers(retries);
                    let metrics = notifications.clone();
                    MeshServer::new(service, tls, verifier)?
                        .with_metrics(move |registry| metrics.register_metrics(registry))
                        .add_service(NotificationsServiceServer::new(notifications))
                }
            };
            match &bus {
                Some(bus) => {
                    for subscriber in &subscribers {
                        tokio::spawn(
                            subscriber
                                .clone()
                                .run(bus.clone(), when_stopped(stopped.clone())),
                        );
                    }
                }
                None if !subscribers.is_empty() => tracing::warn!(
                    %service,
                    "neither SAFRA_BROKER nor SAFRA_BUS_DATABASE_URL: this service follows no events"
                ),
                None => {}
            }
            // The jobs monitor of this service's outbox and subscribers.
            let jobs = Arc::new(
                safra::bus::jobs::Jobs::new(service.name(), jobs_database, bus, subscribers)
                    .with_idle_cursor(retention.idle_cursor),
            );
            let jobs_metrics = safra::bus::jobs::JobsMetrics::default();
            tokio::spawn(jobs_metrics.clone().run(jobs.clone()));
            server
                .add_service(JobsServiceServer::from_arc(jobs))
                .with_metrics(move |registry| jobs_metrics.register(registry))
                .with_metrics(move |registry| retention_metrics.register(registry))
                .with_metrics(move |registry| {
                    registry.register_collector(Box::new(safra::data::db::PoolMetrics(pools)));
                })
                .with_version(crate::VERSION)
                .with_admin(admin, checks)
                .serve(listener, &[service.grpc_service()], when_stopped(stopped))
                .await
                .with_context(|| format!("{service}"))?;
            telemetry.flush();
        }
        ProcessName::Gateway => {
            let config = GatewayConfig::read(reader)?;
            let telemetry = telemetry::init(&config.log, "gateway")?;
            let tls = load_tls("gateway", &config.tls, reader)?;
            let listener = server::bind(config.listen_addr).await.context("gateway")?;
            tracing::info!(addr = %config.listen_addr, "gateway serving");
            safra_gateway::serve(
                &config,
                crate::VERSION,
                listener,
                &tls,
                shutdown::signalled(supervised),
            )
            .await
            .context("gateway")?;
            telemetry.flush();
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once the stop signal was given.
async fn when_stopped(mut stopped: tokio::sync::watch::Receiver<bool>) {
    drop(stopped.wait_for(|stop| *stop).await);
}

/// Retries of idempotent outbound calls, read from the contracts.
fn retrier() -> anyhow::Result<Arc<Retrier>> {
    let pool = safra::contract::descriptor::pool().context("the embedded contracts")?;
    Ok(Arc::new(Retrier::new(&pool, RetryPolicy::default())))
}

/// The marketplace: its wallet peer and background timing from the
/// environment.
fn marketplace(
    reader: Reader<'_>,
    tls: &Arc<MeshTls>,
    database: Database,
) -> anyhow::Result<safra_marketplace::api::Marketplace> {
    use safra_marketplace::api::{BackgroundSettings, Marketplace};

    let wallet_url = peer_endpoint(reader, Service::Wallet)?;
    let wallet = safra::transport::client::mesh_channel(tls, "wallet", &wallet_url)
        .context("SAFRA_WALLET_URL")?;
    let defaults = BackgroundSettings::default();
    let every = reader.parse_or(
        "SAFRA_MARKETPLACE_ROUND_MS",
        u64::try_from(defaults.every.as_millis()).unwrap_or(2000),
        "a whole number of milliseconds",
    )?;
    let pending_after = reader.parse_or(
        "SAFRA_PENDING_INVESTMENT_SECS",
        defaults.pending_after.as_secs(),
        "a whole number of seconds",
    )?;
    Ok(Marketplace::new(
        database,
        wallet,
        retrier()?,
        BackgroundSettings {
            every: Duration::from_millis(every.max(10)),
            pending_after: Duration::from_secs(pending_after),
        },
    ))
}

/// The wallet, with the marketplace it asks for offerings' schedules.
fn wallet(
    reader: Reader<'_>,
    tls: &Arc<MeshTls>,
    database: Database,
) -> anyhow::Result<safra_wallet::api::Wallets> {
    let url = peer_endpoint(reader, Service::Marketplace)?;
    let marketplace = safra::transport::client::mesh_channel(tls, "marketplace", &url)
        .context("SAFRA_MARKETPLACE_URL")?;
    Ok(safra_wallet::api::Wallets::new(
        database,
        marketplace,
        retrier()?,
    ))
}

/// Distribution: its marketplace (holders) and wallet (credits) peers.
fn distribution(
    reader: Reader<'_>,
    tls: &Arc<MeshTls>,
    database: Database,
) -> anyhow::Result<safra_distribution::api::Distributions> {
    let marketplace_url = peer_endpoint(reader, Service::Marketplace)?;
    let marketplace = safra::transport::client::mesh_channel(tls, "marketplace", &marketplace_url)
        .context("SAFRA_MARKETPLACE_URL")?;
    let wallet_url = peer_endpoint(reader, Service::Wallet)?;
    let wallet = safra::transport::client::mesh_channel(tls, "wallet", &wallet_url)
        .context("SAFRA_WALLET_URL")?;
    Ok(safra_distribution::api::Distributions::new(
        database,
        marketplace,
        wallet,
        retrier()?,
    ))
}

/// Loads this process's certificate, key and CA, and watches them for
/// rotation every `SAFRA_TLS_RELOAD_SECS` (default 10).
fn load_tls(name: &str, paths: &TlsPaths, reader: Reader<'_>) -> anyhow::Result<Arc<MeshTls>> {
    safra::identity::tls::install_crypto_provider();
    let tls = MeshTls::load(paths.clone()).with_context(|| {
        format!("{name}: TLS (run `safra certs init`, or set SAFRA_TLS_CERT, SAFRA_TLS_KEY and SAFRA_TLS_CA)")
    })?;
    let period = reader.parse_or("SAFRA_TLS_RELOAD_SECS", 10_u64, "a whole number of seconds")?;
    tls.spawn_reloader(Duration::from_secs(period.max(1)));
    Ok(tls)
}

/// `SAFRA_BUS_RETENTION_HOURS` and `SAFRA_BUS_IDLE_CURSOR_HOURS` (both 168).
fn retention_settings(
    reader: Reader<'_>,
) -> anyhow::Result<safra::bus::retention::RetentionSettings> {
    let defaults = safra::bus::retention::RetentionSettings::default();
    let hours = |name: &str, default: Duration| -> anyhow::Result<Duration> {
        let value: u64 =
            reader.parse_or(name, default.as_secs() / 3600, "a whole number of hours")?;
        if value == 0 {
            anyhow::bail!("{name}: must be at least 1 hour");
        }
        Ok(Duration::from_secs(value * 3600))
    };
    Ok(safra::bus::retention::RetentionSettings {
        keep: hours("SAFRA_BUS_RETENTION_HOURS", defaults.keep)?,
        idle_cursor: hours("SAFRA_BUS_IDLE_CURSOR_HOURS", defaults.idle_cursor)?,
        ..defaults
    })
}

/// `/readyz` reports the database ready when a pooled connection answers.
fn database_check(database: Database) -> (String, Check) {
    let check: Check = Arc::new(move || {
        let database = database.clone();
        Box::pin(async move { database.ping().await.map_err(|error| error.to_string()) })
            as CheckFuture
    });
    ("database".to_owned(), check)
}

/// The accounts service: its key-encryption key, password hashing and token
/// lifetimes from the environment.
async fn accounts(
    config: &ServiceConfig,
    reader: Reader<'_>,
    database: Database,
) -> anyhow::Result<safra_accounts::api::Accounts> {
    use safra::config::ConfigError;
    use safra_accounts::{
        api::{Accounts, TokenSettings},
        domain::{Argon2id, HashingPool},
    };

    let secret = reader.required_secret("SAFRA_KEY_ENCRYPTION_KEY")?;
    let keys =
        safra_accounts::key_encryption_key(secret.expose()).map_err(|problem| ConfigError {
            variable: "SAFRA_KEY_ENCRYPTION_KEY".into(),
            problem,
        })?;
    // Hashing is CPU-bound: more hashes at once than cores only adds memory
    // (19 MiB each) and latency.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let concurrency = reader.parse_or("SAFRA_HASH_CONCURRENCY", cores.min(4), "a whole number")?;
    let access_secs = reader.parse_or(
        "SAFRA_ACCESS_TOKEN_SECS",
        900_u64,
        "a whole number of seconds",
    )?;
    let hashing = HashingPool::new(Arc::new(Argon2id::new()?), concurrency)?;
    let tokens = TokenSettings {
        issuer: config.jwt_issuer.clone(),
        access_lifetime: Duration::from_secs(access_secs),
        ..TokenSettings::default()
    };
    Ok(Accounts::new(database, hashing, keys, tokens).await?)
}
