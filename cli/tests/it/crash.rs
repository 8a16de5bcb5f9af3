//! A marketplace process killed (SIGKILL, no warning) after the wallet
//! debited an investor and before the marketplace committed the
//! investment: nothing is lost. The restarted process finds the investment
//! still pending, asks the wallet again under the same key (which returns
//! the first debit) and confirms it; the books of both services agree.
//!
//! The window is made wide without any test flag in the product: the test
//! holds a lock on the marketplace's outbox table, which the confirming
//! transaction must write to, so the process waits there with the debit
//! done until it is killed.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use safra::{
    accounts::v1::{
        LoginRequest, RegisterRequest, Role, accounts_service_client::AccountsServiceClient,
        accounts_service_server::AccountsServiceServer,
    },
    data::db::{self, Database},
    identity::auth::{DEFAULT_ISSUER, TokenVerifier},
    marketplace::v1::{
        CreateOfferingRequest, GetOfferingRequest, Installment, InvestRequest, InvestmentStatus,
        Offering, marketplace_service_client::MarketplaceServiceClient,
    },
    mesh::Service,
    transport::client::AccountsJwks,
    transport::client::{
        MeshChannel,
        retry::{Retrier, RetryPolicy},
    },
    transport::server::MeshServer,
    r#type::v1::Money,
    wallet::v1::{
        DepositRequest, GetWalletRequest, wallet_service_client::WalletServiceClient,
        wallet_service_server::WalletServiceServer,
    },
};
use safra_accounts::{
    api::{Accounts, TokenSettings},
    domain::{Argon2id, HashingPool, KeyEncryption},
};
use safra_test_support::{TestDatabase, TestPki};
use tonic::Request;

use crate::{SAFRA, free_port};

/// How long anything the test waits for may take on a busy machine.
const PATIENCE: Duration = Duration::from_secs(60);

struct Marketplace {
    child: Child,
}

impl Drop for Marketplace {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// `safra serve marketplace` as its own process on `listen`.
fn start_marketplace(
    pki: &TestPki,
    database: &TestDatabase,
    listen: SocketAddr,
    accounts: SocketAddr,
    wallet: SocketAddr,
) -> Marketplace {
    let paths = pki.paths("marketplace");
    let child = Command::new(SAFRA)
        .args(["serve", "marketplace"])
        .env("SAFRA_LISTEN_ADDR", listen.to_string())
        .env(
            "SAFRA_ADMIN_ADDR",
            SocketAddr::from(([127, 0, 0, 1], free_port())).to_string(),
        )
        .env("DATABASE_URL", database.url().expose())
        .env("SAFRA_TLS_CERT", &paths.cert)
        .env("SAFRA_TLS_KEY", &paths.key)
        .env("SAFRA_TLS_CA", &paths.ca)
        .env("SAFRA_ACCOUNTS_URL", accounts.to_string())
        .env("SAFRA_WALLET_URL", wallet.to_string())
        .env("SAFRA_PENDING_INVESTMENT_SECS", "0")
        .env("SAFRA_MARKETPLACE_ROUND_MS", "200")
        .env("SAFRA_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("safra serve marketplace starts");
    Marketplace { child }
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

fn brl(minor: i64) -> Money {
    Money {
        currency_code: "BRL".into(),
        amount_minor: minor,
    }
}

fn date(days: i64) -> safra::google::r#type::Date {
    use chrono::Datelike;
    let day = (chrono::Utc::now() + chrono::Duration::days(days)).date_naive();
    safra::google::r#type::Date {
        year: day.year(),
        month: i32::try_from(day.month()).expect("month"),
        day: i32::try_from(day.day()).expect("day"),
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn number(conn: &mut AsyncPgConnection, query: &str) -> i64 {
    let rows: Vec<Count> = diesel::sql_query(query).load(conn).await.expect(query);
    rows.into_iter().next().map_or(-1, |row| row.n)
}

async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Accounts and the wallet in this process (real services, mTLS), each
/// verifying tokens from the accounts JWKS as production does.
async fn spawn_accounts_and_wallet(
    pki: &TestPki,
    accounts_db: &TestDatabase,
    wallet_db: &TestDatabase,
    marketplace: SocketAddr,
) -> (SocketAddr, SocketAddr) {
    let database = Database::connect(&accounts_db.config())
        .await
        .expect("pool");
    let hashing = HashingPool::new(Arc::new(Argon2id::new().expect("argon2")), 2).expect("pool");
    let accounts = Accounts::new(
        database,
        hashing,
        KeyEncryption::new(&[7_u8; 32]).expect("key"),
        TokenSettings::default(),
    )
    .await
    .expect("accounts");
    let (accounts_listener, accounts_addr) = bind().await;
    let verifier = Arc::new(TokenVerifier::new(DEFAULT_ISSUER, accounts.key_source()));
    let server = MeshServer::new(Service::Accounts, pki.tls("accounts"), verifier)
        .expect("server")
        .add_service(AccountsServiceServer::new(accounts));
    tokio::spawn(server.serve(accounts_listener, &[], std::future::pending()));

    let wallet_tls = pki.tls("wallet");
    let jwks =
        safra::transport::client::mesh_channel(&wallet_tls, "accounts", &accounts_addr.to_string())
            .expect("channel");
    let verifier = Arc::new(TokenVerifier::new(
        DEFAULT_ISSUER,
        Arc::new(AccountsJwks::new(jwks)),
    ));
    let to_marketplace = safra::transport::client::mesh_channel(
        &wallet_tls,
        "marketplace",
        &marketplace.to_string(),
    )
    .expect("channel");
    let pool = safra::contract::descriptor::pool().expect("contracts");
    let wallet = safra_wallet::api::Wallets::new(
        Database::connect(&wallet_db.config()).await.expect("pool"),
        to_marketplace,
        Arc::new(Retrier::new(&pool, RetryPolicy::default())),
    );
    let (wallet_listener, wallet_addr) = bind().await;
    let server = MeshServer::new(Service::Wallet, wallet_tls, verifier)
        .expect("server")
        .add_service(WalletServiceServer::new(wallet));
    tokio::spawn(server.serve(wallet_listener, &[], std::future::pending()));
    (accounts_addr, wallet_addr)
}

async fn token(
    accounts: &mut AccountsServiceClient<MeshChannel>,
    email: &str,
    role: Role,
) -> String {
    accounts
        .register(RegisterRequest {
            email: email.into(),
            password: "correct horse battery".into(),
            display_name: "Crash".into(),
            role: role as i32,
        })
        .await
        .expect("registered");
    accounts
        .login(LoginRequest {
            email: email.into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("logged in")
        .into_inner()
        .access_token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketplace_killed_between_the_debit_and_its_commit_loses_nothing() {
    let pki = TestPki::new();
    let accounts_db = TestDatabase::migrated("accounts", &safra_accounts::MIGRATIONS)
        .await
        .expect("database");
    let wallet_db = TestDatabase::migrated("wallet", &safra_wallet::MIGRATIONS)
        .await
        .expect("database");
    let market_db = TestDatabase::migrated("marketplace", &safra_marketplace::MIGRATIONS)
        .await
        .expect("database");
    let market_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (accounts_addr, wallet_addr) =
        spawn_accounts_and_wallet(&pki, &accounts_db, &wallet_db, market_addr).await;
    let first = start_marketplace(&pki, &market_db, market_addr, accounts_addr, wallet_addr);

    let gateway = pki.tls("gateway");
    let channel = |service: &str, addr: SocketAddr| {
        safra::transport::client::mesh_channel(&gateway, service, &addr.to_string())
            .expect("channel")
    };
    let mut accounts = AccountsServiceClient::new(channel("accounts", accounts_addr));
    let mut wallet = WalletServiceClient::new(channel("wallet", wallet_addr));
    let market = MarketplaceServiceClient::new(channel("marketplace", market_addr));
    let producer = token(&mut accounts, "producer@crash.test", Role::Producer).await;
    let investor = token(&mut accounts, "investor@crash.test", Role::Investor).await;
    wallet
        .deposit(bearer(
            DepositRequest {
                amount: Some(brl(50_000)),
                idempotency_key: "pix".into(),
            },
            &investor,
        ))
        .await
        .expect("deposit");

    let deadline = chrono::Utc::now() + chrono::Duration::days(7);
    let offering = Offering {
        commodity: "coffee_arabica".into(),
        quantity: 200,
        unit: "bag_60kg".into(),
        face_value: Some(brl(100_000)),
        annual_rate_bps: 900,
        maturity_date: Some(date(365)),
        funding_deadline: Some(prost_types::Timestamp {
            seconds: deadline.timestamp(),
            nanos: 0,
        }),
        installments: vec![Installment {
            number: 1,
            due_date: Some(date(300)),
            amount: Some(brl(110_000)),
            ..Installment::default()
        }],
        ..Offering::default()
    };
    // The child may still be starting.
    let start = Instant::now();
    let offering_id = loop {
        let attempt = market
            .clone()
            .create_offering(bearer(
                CreateOfferingRequest {
                    offering: Some(offering.clone()),
                },
                &producer,
            ))
            .await;
        match attempt {
            Ok(response) => break response.into_inner().offering.expect("offering").id,
            Err(status) => assert!(
                start.elapsed() < PATIENCE,
                "the marketplace never answered: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Hold the table the confirmation writes to.
    let mut blocker = db::connect_once(market_db.url().expose())
        .await
        .expect("connect");
    blocker
        .batch_execute("BEGIN; LOCK TABLE outbox IN EXCLUSIVE MODE;")
        .await
        .expect("lock the outbox");

    let invest = {
        let mut market = market.clone();
        let request = bearer(
            InvestRequest {
                offering_id: offering_id.clone(),
                amount: Some(brl(30_000)),
                idempotency_key: "crash-1".into(),
            },
            &investor,
        );
        tokio::spawn(async move { market.invest(request).await })
    };

    let mut wallet_conn = db::connect_once(wallet_db.url().expose())
        .await
        .expect("connect");
    let mut market_conn = db::connect_once(market_db.url().expose())
        .await
        .expect("connect");
    let debits =
        "SELECT count(*)::bigint AS n FROM ledger_transactions WHERE kind = 'investment_debit'";
    let pending = "SELECT count(*)::bigint AS n FROM investments WHERE status = 'pending'";
    let deadline = Instant::now() + PATIENCE;
    while number(&mut wallet_conn, debits).await != 1 {
        assert!(Instant::now() < deadline, "the wallet never debited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        number(&mut market_conn, pending).await,
        1,
        "recorded pending, before the debit"
    );

    // The debit is done; the marketplace waits on the outbox lock. Kill it.
    drop(first);
    let refused = invest.await.expect("task");
    assert!(refused.is_err(), "the caller never heard of success");
    blocker.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(
        number(&mut market_conn, pending).await,
        1,
        "the confirmation died with the process"
    );

    // A new process completes what the dead one left.
    let _second = start_marketplace(&pki, &market_db, market_addr, accounts_addr, wallet_addr);
    let confirmed = "SELECT count(*)::bigint AS n FROM investments WHERE status = 'confirmed'";
    let deadline = Instant::now() + PATIENCE;
    while number(&mut market_conn, confirmed).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the investment was never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The books of both services agree, and the debit happened once.
    assert_eq!(number(&mut wallet_conn, debits).await, 1);
    let balance = wallet
        .get_wallet(bearer(GetWalletRequest {}, &investor))
        .await
        .expect("wallet")
        .into_inner()
        .balance
        .expect("balance")
        .amount_minor;
    assert_eq!(balance, 20_000);
    let clearing = number(
        &mut wallet_conn,
        "SELECT coalesce(sum(e.amount_minor), 0)::bigint AS n FROM ledger_entries e \
         JOIN wallets w ON w.id = e.wallet_id WHERE w.system_account = 'clearing:investments'",
    )
    .await;
    let raised = market
        .clone()
        .get_offering(GetOfferingRequest {
            offering_id: offering_id.clone(),
        })
        .await
        .expect("offering")
        .into_inner()
        .raised
        .expect("raised")
        .amount_minor;
    assert_eq!((clearing, raised), (30_000, 30_000));
    assert_eq!(
        number(
            &mut market_conn,
            "SELECT count(*)::bigint AS n FROM outbox WHERE event_type = 'safra.events.v1.InvestmentCreated'"
        )
        .await,
        1
    );
    // The investor's retry gets the investment that was completed.
    let retried = market
        .clone()
        .invest(bearer(
            InvestRequest {
                offering_id,
                amount: Some(brl(30_000)),
                idempotency_key: "crash-1".into(),
            },
            &investor,
        ))
        .await
        .expect("the retry")
        .into_inner()
        .investment
        .expect("investment");
    assert_eq!(retried.status(), InvestmentStatus::Confirmed);
}
