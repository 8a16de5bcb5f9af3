//! One installment payment distributed to many holders, end to end: the
//! wallet, the marketplace and the distribution service in one process,
//! each behind its whole mesh stack (mutual TLS, tokens, the contract
//! stage) on a database of its own, events on the PostgreSQL bus, every
//! relay and subscriber running as `safra serve` runs them.
//!
//! - `distribute <holders>`: `holders` investors fund an offering (R$ 10.00
//!   each), its producer pays the single installment, and the run times the
//!   payment's way to the last holder's credit (PaymentConfirmed relayed,
//!   ListHolders paged, the split computed twice, one Wallet.Credit per
//!   holder, DistributionCompleted) and checks that the credits sum to the
//!   payment. Needs DATABASE_URL.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use safra::{
    bus::{Bus, postgres::PgBus, subscriber::Retries},
    data::db::{self, Database},
    distribution::v1::distribution_service_server::DistributionServiceServer,
    google::r#type::Date,
    identity::auth::{DEFAULT_ISSUER, SigningKey, StaticKeys, TokenSigner, TokenVerifier},
    identity::certs::CertDir,
    identity::tls::{MeshTls, TlsPaths},
    marketplace::v1::{
        CreateOfferingRequest, GetOfferingRequest, Installment, InvestRequest, Offering,
        OfferingStatus, marketplace_service_client::MarketplaceServiceClient,
        marketplace_service_server::MarketplaceServiceServer,
    },
    mesh::Service,
    transport::client::{
        MeshChannel,
        retry::{Retrier, RetryPolicy},
    },
    transport::server::MeshServer,
    r#type::v1::Money,
    wallet::v1::{
        DepositRequest, PayInstallmentRequest, wallet_service_client::WalletServiceClient,
        wallet_service_server::WalletServiceServer,
    },
};
use tonic::Request;

use crate::events::database;

/// Centavos each holder invests.
const STAKE: i64 = 1_000;
/// Calls in flight while the holders invest.
const CONCURRENCY: usize = 32;

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

fn brl(minor: i64) -> Money {
    Money {
        currency_code: "BRL".into(),
        amount_minor: minor,
    }
}

fn day(offset: i64) -> Date {
    use chrono::Datelike;
    let date = (chrono::Utc::now() + chrono::Duration::days(offset)).date_naive();
    Date {
        year: date.year(),
        month: i32::try_from(date.month()).unwrap_or(1),
        day: i32::try_from(date.day()).unwrap_or(1),
    }
}

fn with_token<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn listener() -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// `distribute`.
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
pub async fn distribute(holders: usize) -> anyhow::Result<()> {
    safra::identity::tls::install_crypto_provider();
    let server = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let dir = tempfile_dir()?;
    CertDir::new(&dir).init()?;
    let tls = |name: &str| MeshTls::load(TlsPaths::in_dir(&dir, name));
    let key = SigningKey::generate("bench-distribution")?;
    let keys = Arc::new(StaticKeys(Arc::new(std::sync::RwLock::new(vec![
        key.public_key().clone(),
    ]))));
    let signer = TokenSigner::new(key, DEFAULT_ISSUER);
    let verifier = || Arc::new(TokenVerifier::new(DEFAULT_ISSUER, keys.clone()));
    let retrier = Arc::new(Retrier::new(
        &safra::contract::descriptor::pool()?,
        RetryPolicy::default(),
    ));

    let tag = format!("safra_bench_distribution_{}", std::process::id());
    let names: Vec<String> = ["wallet", "marketplace", "distribution", "bus"]
        .iter()
        .map(|part| format!("{tag}_{part}"))
        .collect();
    let wallet_db = database(&server, &names[0], &safra_wallet::MIGRATIONS).await?;
    let market_db = database(&server, &names[1], &safra_marketplace::MIGRATIONS).await?;
    let distribution_db = database(&server, &names[2], &safra_distribution::MIGRATIONS).await?;
    let bus = Bus::Postgres(PgBus::new(
        database(&server, &names[3], &safra::bus::MIGRATIONS).await?,
    ));

    let (wallet_listener, wallet_addr) = listener().await?;
    let (market_listener, market_addr) = listener().await?;
    let (distribution_listener, _) = listener().await?;
    let channel =
        |from: &Arc<MeshTls>, to: &str, addr: SocketAddr| -> anyhow::Result<MeshChannel> {
            Ok(safra::transport::client::mesh_channel(
                from,
                to,
                &addr.to_string(),
            )?)
        };
    let wallet_tls = tls("wallet")?;
    let wallets = safra_wallet::api::Wallets::new(
        wallet_db.clone(),
        channel(&wallet_tls, "marketplace", market_addr)?,
        retrier.clone(),
    );
    tokio::spawn(
        MeshServer::new(Service::Wallet, wallet_tls, verifier())?
            .add_service(WalletServiceServer::new(wallets))
            .serve(wallet_listener, &[], std::future::pending()),
    );
    let market_tls = tls("marketplace")?;
    let marketplace = safra_marketplace::api::Marketplace::new(
        market_db.clone(),
        channel(&market_tls, "wallet", wallet_addr)?,
        retrier.clone(),
        safra_marketplace::api::BackgroundSettings {
            every: Duration::from_millis(200),
            pending_after: Duration::from_secs(30),
        },
    );
    for subscriber in marketplace.subscribers(Retries::default()) {
        tokio::spawn(subscriber.run(bus.clone(), std::future::pending()));
    }
    tokio::spawn(marketplace.clone().run_background(std::future::pending()));
    tokio::spawn(
        MeshServer::new(Service::Marketplace, market_tls, verifier())?
            .add_service(MarketplaceServiceServer::new(marketplace))
            .serve(market_listener, &[], std::future::pending()),
    );
    let distribution_tls = tls("distribution")?;
    let distributions = safra_distribution::api::Distributions::new(
        distribution_db.clone(),
        channel(&distribution_tls, "marketplace", market_addr)?,
        channel(&distribution_tls, "wallet", wallet_addr)?,
        retrier,
    );
    for subscriber in distributions.subscribers(Retries::default()) {
        tokio::spawn(subscriber.run(bus.clone(), std::future::pending()));
    }
    tokio::spawn(distributions.clone().run_credits(std::future::pending()));
    tokio::spawn(
        MeshServer::new(Service::Distribution, distribution_tls, verifier())?
            .add_service(DistributionServiceServer::new(distributions))
            .serve(distribution_listener, &[], std::future::pending()),
    );
    for producer_db in [&wallet_db, &market_db, &distribution_db] {
        tokio::spawn(safra::bus::relay::run(
            producer_db.clone(),
            bus.clone(),
            std::future::pending(),
        ));
    }

    // Calls as the gateway makes them, for signed-in users.
    let gateway = tls("gateway")?;
    let market = MarketplaceServiceClient::new(channel(&gateway, "marketplace", market_addr)?);
    let wallet = WalletServiceClient::new(channel(&gateway, "wallet", wallet_addr)?);
    let token = |role: &str| -> anyhow::Result<(String, String)> {
        let id = uuid::Uuid::new_v4().to_string();
        let (token, _) = signer.sign(&id, role, Duration::from_secs(3600))?;
        Ok((id, token))
    };
    let (_, producer) = token("producer")?;
    let face = STAKE * i64::try_from(holders)?;
    let deadline = chrono::Utc::now() + chrono::Duration::days(7);
    let offering = market
        .clone()
        .create_offering(with_token(
            CreateOfferingRequest {
                offering: Some(Offering {
                    commodity: "soybean".into(),
                    quantity: 1000,
                    unit: "bag_60kg".into(),
                    face_value: Some(brl(face)),
                    annual_rate_bps: 1200,
                    maturity_date: Some(day(365)),
                    funding_deadline: Some(prost_types::Timestamp {
                        seconds: deadline.timestamp(),
                        nanos: 0,
                    }),
                    installments: vec![Installment {
                        number: 1,
                        due_date: Some(day(300)),
                        amount: Some(brl(face)),
                        ..Installment::default()
                    }],
                    ..Offering::default()
                }),
            },
            &producer,
        )?)
        .await?
        .into_inner()
        .offering
        .context("an offering")?;

    let funding = Instant::now();
    let mut investing = tokio::task::JoinSet::new();
    let investors: Vec<(String, String)> = (0..holders)
        .map(|_| token("investor"))
        .collect::<anyhow::Result<_>>()?;
    for chunk in investors.chunks(holders.div_ceil(CONCURRENCY)) {
        let chunk = chunk.to_vec();
        let (mut market, mut wallet, offering) =
            (market.clone(), wallet.clone(), offering.id.clone());
        investing.spawn(async move {
            for (n, (_, token)) in chunk.iter().enumerate() {
                wallet
                    .deposit(with_token(
                        DepositRequest {
                            amount: Some(brl(STAKE)),
                            idempotency_key: format!("deposit-{n}"),
                        },
                        token,
                    )?)
                    .await?;
                market
                    .invest(with_token(
                        InvestRequest {
                            offering_id: offering.clone(),
                            amount: Some(brl(STAKE)),
                            idempotency_key: format!("invest-{n}"),
                        },
                        token,
                    )?)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = investing.join_next().await {
        done??;
    }
    let funded = funding.elapsed();
    // The payout reaches the producer; the installment is paid from it.
    let waited = Instant::now();
    loop {
        let status = market
            .clone()
            .get_offering(GetOfferingRequest {
                offering_id: offering.id.clone(),
            })
            .await?
            .into_inner()
            .status;
        if status == OfferingStatus::Funded as i32 {
            match wallet
                .clone()
                .pay_installment(with_token(
                    PayInstallmentRequest {
                        offering_id: offering.id.clone(),
                        installment_number: 1,
                        idempotency_key: "pay-1".into(),
                    },
                    &producer,
                )?)
                .await
            {
                Ok(_) => break,
                Err(status) if waited.elapsed() < Duration::from_secs(60) => {
                    tracing::debug!(%status, "not yet payable");
                }
                Err(status) => bail!("the installment was never payable: {status}"),
            }
        }
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("the offering was not funded in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paid = Instant::now();
    let credited = loop {
        let credits = count(
            &wallet_db,
            "SELECT count(*) AS n, coalesce(sum(e.amount_minor), 0)::bigint AS total \
             FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
             JOIN wallets w ON w.id = e.wallet_id \
             WHERE t.kind = 'distribution_credit' AND w.owner_id IS NOT NULL",
        )
        .await?;
        if credits.n >= i64::try_from(holders)? {
            break credits;
        }
        if paid.elapsed() > Duration::from_secs(300) {
            bail!("{} of {holders} holders credited after 300 s", credits.n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let all_credited = paid.elapsed();
    let settled = loop {
        let status = market
            .clone()
            .get_offering(GetOfferingRequest {
                offering_id: offering.id.clone(),
            })
            .await?
            .into_inner()
            .status;
        if status == OfferingStatus::Settled as i32 {
            break paid.elapsed();
        }
        if paid.elapsed() > Duration::from_secs(300) {
            bail!("the offering did not settle in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "| {holders} | {:.1} | {:.2} | {:.2} | {} | {} |",
        funded.as_secs_f64(),
        all_credited.as_secs_f64(),
        settled.as_secs_f64(),
        credited.n,
        if credited.total == face {
            "exact"
        } else {
            "NOT EXACT"
        },
    );

    let mut conn = db::connect_once(&server).await?;
    drop((wallet_db, market_db, distribution_db, bus));
    for name in &names {
        conn.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            db::quote_identifier(name)
        ))
        .await?;
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

async fn count(database: &Database, query: &str) -> anyhow::Result<Sum> {
    let mut conn = database.connection().await?;
    let rows: Vec<Sum> = diesel::sql_query(query).load(&mut conn).await?;
    rows.into_iter().next().context("a count")
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("safra-bench-distribution-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
