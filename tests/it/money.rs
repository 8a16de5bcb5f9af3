//! The marketplace and the wallet together, over their real stacks: mutual
//! TLS between them, real signed tokens, the contract stage, one cloned
//! PostgreSQL database each. Money must come out exact: investments race,
//! keys repeat, offerings fund and cancel, installments are paid, and the
//! books balance afterwards.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use safra::{
    contract::status,
    data::db::{self, Database},
    google::r#type::Date,
    identity::auth::{
        DEFAULT_ISSUER, PublicKey, SigningKey, StaticKeys, TokenSigner, TokenVerifier,
    },
    marketplace::v1::{
        CancelOfferingRequest, CreateOfferingRequest, GetOfferingRequest, Installment,
        InvestRequest, InvestmentStatus, ListHoldersRequest, ListInvestmentsRequest,
        ListOfferingsRequest, Offering, OfferingStatus,
        marketplace_service_client::MarketplaceServiceClient,
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
        CreditRequest, DepositRequest, GetWalletRequest, ListTransactionsRequest,
        PayInstallmentRequest, TransactionKind, wallet_service_client::WalletServiceClient,
        wallet_service_server::WalletServiceServer,
    },
};
use safra_marketplace::api::{BackgroundSettings, Marketplace};
use safra_test_support::{TestDatabase, TestPki};
use safra_wallet::api::Wallets;
use tonic::{Code, Request, Status};
use uuid::Uuid;

/// Both services running, clients as the gateway would call them, and a
/// signer whose key both services trust.
pub(crate) struct MoneyMesh {
    pub(crate) pki: TestPki,
    pub(crate) marketplace_db: TestDatabase,
    pub(crate) wallet_db: TestDatabase,
    pub(crate) market: MarketplaceServiceClient<MeshChannel>,
    pub(crate) wallet: WalletServiceClient<MeshChannel>,
    /// The in-process service, to run background rounds by hand.
    pub(crate) marketplace: Marketplace,
    pub(crate) wallet_addr: SocketAddr,
    pub(crate) market_addr: SocketAddr,
    signer: TokenSigner,
    /// The keys every service trusts (the signer's).
    pub(crate) keys: Arc<StaticKeys>,
}

pub(crate) fn trusted_signer() -> (TokenSigner, Arc<StaticKeys>) {
    let key = SigningKey::generate(format!("money-{}", Uuid::new_v4().simple())).expect("a key");
    let public: PublicKey = key.public_key().clone();
    let keys = Arc::new(StaticKeys(Arc::new(std::sync::RwLock::new(vec![public]))));
    (TokenSigner::new(key, DEFAULT_ISSUER), keys)
}

pub(crate) fn verifier(keys: &Arc<StaticKeys>) -> Arc<TokenVerifier> {
    Arc::new(TokenVerifier::new(DEFAULT_ISSUER, keys.clone()))
}

pub(crate) fn retrier() -> Arc<Retrier> {
    let pool = safra::contract::descriptor::pool().expect("contracts");
    Arc::new(Retrier::new(&pool, RetryPolicy::default()))
}

pub(crate) async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// A wallet server for `db` calling the marketplace at `marketplace`.
pub(crate) async fn spawn_wallet(
    pki: &TestPki,
    keys: &Arc<StaticKeys>,
    db: &TestDatabase,
    listener: tokio::net::TcpListener,
    marketplace: &str,
) {
    let tls = pki.tls("wallet");
    let channel =
        safra::transport::client::mesh_channel(&tls, "marketplace", marketplace).expect("channel");
    let database = Database::connect(&db.config()).await.expect("pool");
    let server = MeshServer::new(Service::Wallet, tls, verifier(keys))
        .expect("server")
        .add_service(WalletServiceServer::new(Wallets::new(
            database,
            channel,
            retrier(),
        )));
    tokio::spawn(server.serve(listener, &[], std::future::pending()));
}

/// A marketplace service (not served) over `db`, debiting the wallet at
/// `wallet`, as the marketplace's identity.
pub(crate) async fn marketplace_service(
    pki: &TestPki,
    db: &TestDatabase,
    wallet: &str,
) -> Marketplace {
    let channel = safra::transport::client::mesh_channel(&pki.tls("marketplace"), "wallet", wallet)
        .expect("channel");
    let database = Database::connect(&db.config()).await.expect("pool");
    Marketplace::new(
        database,
        channel,
        retrier(),
        BackgroundSettings {
            every: Duration::from_millis(50),
            pending_after: Duration::ZERO,
        },
    )
}

pub(crate) async fn spawn_money_mesh() -> MoneyMesh {
    let pki = TestPki::new();
    let (signer, keys) = trusted_signer();
    let marketplace_db = TestDatabase::migrated("marketplace", &safra_marketplace::MIGRATIONS)
        .await
        .expect("marketplace database");
    let wallet_db = TestDatabase::migrated("wallet", &safra_wallet::MIGRATIONS)
        .await
        .expect("wallet database");
    let (market_listener, market_addr) = bind().await;
    let (wallet_listener, wallet_addr) = bind().await;
    spawn_wallet(
        &pki,
        &keys,
        &wallet_db,
        wallet_listener,
        &market_addr.to_string(),
    )
    .await;
    let marketplace = marketplace_service(&pki, &marketplace_db, &wallet_addr.to_string()).await;
    let server = MeshServer::new(
        Service::Marketplace,
        pki.tls("marketplace"),
        verifier(&keys),
    )
    .expect("server")
    .add_service(MarketplaceServiceServer::new(marketplace.clone()));
    tokio::spawn(server.serve(market_listener, &[], std::future::pending()));
    let gateway = pki.tls("gateway");
    MoneyMesh {
        market: MarketplaceServiceClient::new(
            safra::transport::client::mesh_channel(
                &gateway,
                "marketplace",
                &market_addr.to_string(),
            )
            .expect("channel"),
        ),
        wallet: WalletServiceClient::new(
            safra::transport::client::mesh_channel(&gateway, "wallet", &wallet_addr.to_string())
                .expect("channel"),
        ),
        pki,
        marketplace_db,
        wallet_db,
        marketplace,
        wallet_addr,
        market_addr,
        signer,
        keys,
    }
}

/// A signed-in user of the mesh.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    token: String,
}

impl User {
    pub(crate) fn call<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().expect("ascii"),
        );
        request
    }
}

impl MoneyMesh {
    /// A marketplace client with `service`'s certificate.
    pub(crate) fn as_service(&self, service: &str) -> MarketplaceServiceClient<MeshChannel> {
        let address = self.market_addr.to_string();
        MarketplaceServiceClient::new(
            safra::transport::client::mesh_channel(&self.pki.tls(service), "marketplace", &address)
                .expect("channel"),
        )
    }

    /// A wallet client with `service`'s certificate.
    pub(crate) fn wallet_as(&self, service: &str) -> WalletServiceClient<MeshChannel> {
        WalletServiceClient::new(
            safra::transport::client::mesh_channel(
                &self.pki.tls(service),
                "wallet",
                &self.wallet_addr.to_string(),
            )
            .expect("channel"),
        )
    }

    pub(crate) fn user(&self, role: &str) -> User {
        let id = Uuid::new_v4();
        let (token, _) = self
            .signer
            .sign(&id.to_string(), role, Duration::from_secs(600))
            .expect("signed");
        User { id, token }
    }

    pub(crate) async fn deposit(&self, user: &User, minor: i64) {
        self.wallet
            .clone()
            .deposit(user.call(DepositRequest {
                amount: Some(brl(minor)),
                idempotency_key: Uuid::new_v4().to_string(),
            }))
            .await
            .expect("deposit");
    }

    pub(crate) async fn balance(&self, user: &User) -> i64 {
        self.wallet
            .clone()
            .get_wallet(user.call(GetWalletRequest {}))
            .await
            .expect("wallet")
            .into_inner()
            .balance
            .expect("balance")
            .amount_minor
    }

    pub(crate) async fn create(&self, producer: &User, face_minor: i64) -> Offering {
        self.market
            .clone()
            .create_offering(producer.call(CreateOfferingRequest {
                offering: Some(offering(face_minor)),
            }))
            .await
            .expect("created")
            .into_inner()
            .offering
            .expect("offering")
    }

    pub(crate) async fn invest(
        &self,
        investor: &User,
        offering: &str,
        minor: i64,
        key: &str,
    ) -> Result<safra::marketplace::v1::Investment, Status> {
        self.market
            .clone()
            .invest(investor.call(InvestRequest {
                offering_id: offering.to_owned(),
                amount: Some(brl(minor)),
                idempotency_key: key.to_owned(),
            }))
            .await
            .map(|response| response.into_inner().investment.expect("investment"))
    }

    pub(crate) async fn offering(&self, id: &str) -> Offering {
        self.market
            .clone()
            .get_offering(GetOfferingRequest {
                offering_id: id.to_owned(),
            })
            .await
            .expect("offering")
            .into_inner()
    }

    /// Runs background rounds until `done` holds, for at most 20 s.
    pub(crate) async fn settle_until<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..200 {
            self.marketplace.round().await.expect("a round");
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} did not happen in 20 s");
    }

    /// Σ of every wallet's entries, by account kind, from the wallet's own
    /// tables: (users, external:deposits, clearing:investments,
    /// clearing:installments).
    pub(crate) async fn books(&self) -> Books {
        books(&self.wallet_db).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Books {
    pub(crate) users: i64,
    pub(crate) deposits: i64,
    pub(crate) investments_clearing: i64,
    pub(crate) installments_clearing: i64,
    pub(crate) negative_users: i64,
    pub(crate) cached_mismatches: i64,
}

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = BigInt)]
    total: i64,
}

async fn sum(conn: &mut diesel_async::AsyncPgConnection, query: &str) -> i64 {
    let rows: Vec<Sum> = diesel::sql_query(query).load(conn).await.expect(query);
    rows.into_iter().next().map_or(0, |row| row.total)
}

pub(crate) async fn books(wallet_db: &TestDatabase) -> Books {
    let mut conn = db::connect_once(wallet_db.url().expose())
        .await
        .expect("connect");
    let account = |name: &str| {
        format!(
            "SELECT coalesce(sum(e.amount_minor), 0)::bigint AS total FROM ledger_entries e \
             JOIN wallets w ON w.id = e.wallet_id WHERE w.system_account = '{name}'"
        )
    };
    Books {
        users: sum(
            &mut conn,
            "SELECT coalesce(sum(e.amount_minor), 0)::bigint AS total FROM ledger_entries e \
             JOIN wallets w ON w.id = e.wallet_id WHERE w.owner_id IS NOT NULL",
        )
        .await,
        deposits: sum(&mut conn, &account("external:deposits")).await,
        investments_clearing: sum(&mut conn, &account("clearing:investments")).await,
        installments_clearing: sum(&mut conn, &account("clearing:installments")).await,
        negative_users: sum(
            &mut conn,
            "SELECT count(*)::bigint AS total FROM wallets WHERE owner_id IS NOT NULL AND balance_minor < 0",
        )
        .await,
        cached_mismatches: sum(
            &mut conn,
            "SELECT count(*)::bigint AS total FROM wallets w WHERE w.owner_id IS NOT NULL AND \
             w.balance_minor <> (SELECT coalesce(sum(e.amount_minor), 0) FROM ledger_entries e WHERE e.wallet_id = w.id)",
        )
        .await,
    }
}

pub(crate) async fn count(url: &safra::config::Secret, query: &str) -> i64 {
    let mut conn = db::connect_once(url.expose()).await.expect("connect");
    sum(&mut conn, query).await
}

pub(crate) fn brl(minor: i64) -> Money {
    Money {
        currency_code: "BRL".into(),
        amount_minor: minor,
    }
}

fn day(offset_days: i64) -> Date {
    use chrono::Datelike;
    let date = (chrono::Utc::now() + chrono::Duration::days(offset_days)).date_naive();
    Date {
        year: date.year(),
        month: i32::try_from(date.month()).expect("month"),
        day: i32::try_from(date.day()).expect("day"),
    }
}

/// A sound offering of `face_minor` centavos: two installments of 55% each,
/// maturing in a year, funding open for a week.
pub(crate) fn offering(face_minor: i64) -> Offering {
    let deadline = chrono::Utc::now() + chrono::Duration::days(7);
    Offering {
        commodity: "soybean".into(),
        quantity: 1000,
        unit: "bag_60kg".into(),
        face_value: Some(brl(face_minor)),
        annual_rate_bps: 1250,
        maturity_date: Some(day(365)),
        funding_deadline: Some(prost_types::Timestamp {
            seconds: deadline.timestamp(),
            nanos: 0,
        }),
        installments: vec![
            Installment {
                number: 1,
                due_date: Some(day(180)),
                amount: Some(brl(face_minor * 55 / 100)),
                ..Installment::default()
            },
            Installment {
                number: 2,
                due_date: Some(day(360)),
                amount: Some(brl(face_minor - face_minor * 55 / 100 + face_minor / 10)),
                ..Installment::default()
            },
        ],
        ..Offering::default()
    }
}

pub(crate) fn reason(status: &Status) -> String {
    status::details(status)
        .error_info
        .map(|info| info.reason)
        .unwrap_or_default()
}

fn violation_fields(status: &Status) -> Vec<String> {
    status::details(status)
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

#[tokio::test]
async fn deposits_are_idempotent_and_bad_amounts_name_their_field() {
    let mesh = spawn_money_mesh().await;
    let ana = mesh.user("investor");
    let mut wallet = mesh.wallet.clone();
    let deposit = |minor: i64, currency: &str, key: &str| {
        ana.call(DepositRequest {
            amount: Some(Money {
                currency_code: currency.into(),
                amount_minor: minor,
            }),
            idempotency_key: key.into(),
        })
    };
    let first = wallet
        .deposit(deposit(12_345, "BRL", "pix-1"))
        .await
        .expect("deposit")
        .into_inner();
    let again = wallet
        .deposit(deposit(12_345, "BRL", "pix-1"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        first.transaction.as_ref().map(|t| &t.id),
        again.transaction.as_ref().map(|t| &t.id),
        "a retry returns the first transaction"
    );
    assert_eq!(mesh.balance(&ana).await, 12_345, "credited once");
    let reused = wallet
        .deposit(deposit(99, "BRL", "pix-1"))
        .await
        .expect_err("same key, other amount");
    assert_eq!(
        (reused.code(), reason(&reused).as_str()),
        (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED")
    );
    for (minor, currency, field) in [
        (0, "BRL", "amount.amount_minor"),
        (-5, "BRL", "amount.amount_minor"),
        (1_000_000_000_001, "BRL", "amount.amount_minor"),
        (100, "USD", "amount.currency_code"),
    ] {
        let refused = wallet
            .deposit(deposit(minor, currency, &Uuid::new_v4().to_string()))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{minor} {currency}");
        assert_eq!(violation_fields(&refused), [field], "{minor} {currency}");
    }

    // A balance near the largest one a wallet can hold overflows cleanly.
    let mut conn = db::connect_once(mesh.wallet_db.url().expose())
        .await
        .expect("connect");
    let wallet_id: Vec<Sum> = diesel::sql_query(format!(
        "SELECT 0::bigint AS total FROM wallets WHERE owner_id = '{}'",
        ana.id
    ))
    .load(&mut conn)
    .await
    .expect("wallet");
    assert_eq!(wallet_id.len(), 1);
    let near_max = i64::MAX - 12_345 - 10;
    conn.batch_execute(&format!(
        "BEGIN;
         INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key)
             VALUES ('00000000-0000-0000-0000-00000000ffff', 'deposit', '{owner}', 'huge');
         INSERT INTO ledger_entries (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor) VALUES
             ('00000000-0000-0000-0000-00000000ffff', (SELECT id FROM wallets WHERE owner_id = '{owner}'), {near_max}, 'BRL', {total}),
             ('00000000-0000-0000-0000-00000000ffff', (SELECT id FROM wallets WHERE system_account = 'external:deposits'), -{near_max}, 'BRL', NULL);
         COMMIT;",
        owner = ana.id,
        total = near_max + 12_345,
    ))
    .await
    .expect("a huge balanced deposit");
    let overflow = wallet
        .deposit(deposit(100, "BRL", "pix-overflow"))
        .await
        .expect_err("overflow");
    assert_eq!(overflow.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&overflow), ["amount.amount_minor"]);
}

#[tokio::test]
async fn transactions_page_newest_first_without_repeats() {
    let mesh = spawn_money_mesh().await;
    let ana = mesh.user("investor");
    for minor in 1..=7 {
        mesh.deposit(&ana, minor * 100).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = mesh
            .wallet
            .clone()
            .list_transactions(ana.call(ListTransactionsRequest {
                page_size: 3,
                page_token: token.clone(),
                kind: TransactionKind::Deposit as i32,
            }))
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.transactions.iter().map(|t| {
            (
                t.amount.clone().expect("amount").amount_minor,
                t.balance_after.clone().expect("after").amount_minor,
            )
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let amounts: Vec<i64> = seen.iter().map(|(amount, _)| *amount).collect();
    assert_eq!(amounts, [700, 600, 500, 400, 300, 200, 100]);
    assert_eq!(seen[0].1, 2800, "the newest leaves the whole balance");
    assert_eq!(seen[6].1, 100, "the oldest its own amount");
    let bad = mesh
        .wallet
        .clone()
        .list_transactions(ana.call(ListTransactionsRequest {
            page_token: "bm90LWEtdG9rZW4".into(),
            ..ListTransactionsRequest::default()
        }))
        .await
        .expect_err("bad token");
    assert_eq!(violation_fields(&bad), ["page_token"]);
}

#[tokio::test]
async fn an_offering_with_a_broken_schedule_names_every_problem() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let mut broken = offering(100_000);
    broken.installments[1].due_date = Some(day(400));
    broken.installments[1].amount = Some(brl(1));
    let refused = mesh
        .market
        .clone()
        .create_offering(producer.call(CreateOfferingRequest {
            offering: Some(broken),
        }))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        violation_fields(&refused),
        ["offering.installments[1].due_date", "offering.installments"]
    );
    let investor = mesh.user("investor");
    let denied = mesh
        .market
        .clone()
        .create_offering(investor.call(CreateOfferingRequest {
            offering: Some(offering(100_000)),
        }))
        .await
        .expect_err("investors do not issue");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let created = mesh.create(&producer, 100_000).await;
    assert_eq!(created.status(), OfferingStatus::Open);
    assert_eq!(created.remaining.expect("remaining").amount_minor, 100_000);
    assert_eq!(created.producer_id, producer.id.to_string());
}

#[tokio::test]
async fn funding_pays_the_producer_once_and_investments_fit_whole() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let ana = mesh.user("investor");
    let bia = mesh.user("investor");
    mesh.deposit(&ana, 70_000).await;
    mesh.deposit(&bia, 50_000).await;
    let offer = mesh.create(&producer, 100_000).await;

    let first = mesh
        .invest(&ana, &offer.id, 60_000, "ana-1")
        .await
        .expect("ana invests");
    assert_eq!(first.status(), InvestmentStatus::Confirmed);
    let too_much = mesh
        .invest(&bia, &offer.id, 40_001, "bia-1")
        .await
        .expect_err("more than remains");
    assert_eq!(
        (too_much.code(), reason(&too_much).as_str()),
        (Code::FailedPrecondition, "AMOUNT_EXCEEDS_REMAINING")
    );
    let info = status::details(&too_much).error_info.expect("info");
    assert_eq!(
        info.metadata.get("remaining_minor").map(String::as_str),
        Some("40000")
    );
    let reused = mesh
        .invest(&ana, &offer.id, 10_000, "ana-1")
        .await
        .expect_err("same key, other amount");
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");

    mesh.invest(&bia, &offer.id, 40_000, "bia-2")
        .await
        .expect("bia fills it");
    let funded = mesh.offering(&offer.id).await;
    assert_eq!(funded.status(), OfferingStatus::Funded);
    assert_eq!(funded.raised.expect("raised").amount_minor, 100_000);
    assert_eq!(funded.remaining.expect("remaining").amount_minor, 0);
    let after_fund = mesh
        .invest(&bia, &offer.id, 1, "bia-3")
        .await
        .expect_err("funded offerings take nothing");
    assert_eq!(reason(&after_fund), "OFFERING_NOT_OPEN");

    // The payout follows in the background; more rounds do not repeat it.
    mesh.settle_until("the payout", || async {
        mesh.balance(&producer).await == 100_000
    })
    .await;
    for _ in 0..3 {
        mesh.marketplace.round().await.expect("round");
    }
    assert_eq!(mesh.balance(&producer).await, 100_000, "paid once");
    assert_eq!(mesh.balance(&ana).await, 10_000);
    assert_eq!(mesh.balance(&bia).await, 10_000);
    let books = mesh.books().await;
    assert_eq!(books.users, 120_000);
    assert_eq!(books.deposits, -120_000);
    assert_eq!(
        books.investments_clearing, 0,
        "everything raised was paid out"
    );

    // The holders the distribution service will split payments over.
    let holders = mesh
        .as_service("distribution")
        .list_holders(ListHoldersRequest {
            offering_id: offer.id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("distribution may list holders")
        .into_inner();
    assert_eq!(holders.holders.len(), 1);
    assert!(
        !holders.next_page_token.is_empty(),
        "a second holder follows"
    );
    assert_eq!(holders.total.expect("total").amount_minor, 100_000);
    let mut expected = [ana.id.to_string(), bia.id.to_string()];
    expected.sort();
    assert_eq!(holders.holders[0].holder_id, expected[0]);
    let denied = mesh
        .market
        .clone()
        .list_holders(ListHoldersRequest {
            offering_id: offer.id.clone(),
            ..ListHoldersRequest::default()
        })
        .await
        .expect_err("the gateway may not");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Each confirmation wrote its event in its transaction.
    let events = count(
        &mesh.marketplace_db.url(),
        "SELECT count(*)::bigint AS total FROM outbox WHERE event_type = 'safra.events.v1.InvestmentCreated'",
    )
    .await;
    assert_eq!(events, 2);
    let funded_events = count(
        &mesh.marketplace_db.url(),
        "SELECT count(*)::bigint AS total FROM outbox WHERE event_type = 'safra.events.v1.OfferingFunded'",
    )
    .await;
    assert_eq!(funded_events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_retries_with_one_key_invest_and_debit_once() {
    let mesh = Arc::new(spawn_money_mesh().await);
    let producer = mesh.user("producer");
    let ana = mesh.user("investor");
    mesh.deposit(&ana, 50_000).await;
    let offer = mesh.create(&producer, 100_000).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mesh = mesh.clone();
        let ana = ana.clone();
        let id = offer.id.clone();
        calls.spawn(async move { mesh.invest(&ana, &id, 30_000, "one-key").await });
    }
    let outcomes = calls.join_all().await;
    let mut ids: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| {
            outcome
                .as_ref()
                .ok()
                .map(|investment| investment.id.clone())
        })
        .collect();
    let failures: Vec<&Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    // A call that met another one mid-debit may be told to retry.
    assert!(
        failures
            .iter()
            .all(|status| status.code() == Code::Unavailable),
        "{failures:?}"
    );
    ids.dedup();
    assert_eq!(ids.len(), 1, "one investment");
    mesh.settle_until("the investment settles", || async {
        mesh.balance(&ana).await == 20_000
    })
    .await;
    let debits = count(
        &mesh.wallet_db.url(),
        "SELECT count(*)::bigint AS total FROM ledger_transactions WHERE kind = 'investment_debit'",
    )
    .await;
    assert_eq!(debits, 1, "one debit");
    assert_eq!(
        mesh.offering(&offer.id)
            .await
            .raised
            .expect("raised")
            .amount_minor,
        30_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn investors_racing_for_the_last_units_never_oversubscribe() {
    let mesh = Arc::new(spawn_money_mesh().await);
    let producer = mesh.user("producer");
    let offer = mesh.create(&producer, 100_000).await;
    let mut investors = Vec::new();
    for _ in 0..24 {
        let investor = mesh.user("investor");
        mesh.deposit(&investor, 10_000).await;
        investors.push(investor);
    }
    // 24 investors want 7,000 each of 100,000: at most 14 fit.
    let mut tasks = Vec::new();
    for investor in investors.clone() {
        let mesh = mesh.clone();
        let id = offer.id.clone();
        tasks.push(tokio::spawn(async move {
            mesh.invest(&investor, &id, 7_000, "race").await
        }));
    }
    let mut confirmed = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(investment) => {
                assert_eq!(investment.status(), InvestmentStatus::Confirmed);
                confirmed += 1;
            }
            Err(status) => assert!(
                matches!(
                    reason(&status).as_str(),
                    "AMOUNT_EXCEEDS_REMAINING" | "OFFERING_NOT_OPEN"
                ),
                "{status:?}"
            ),
        }
    }
    assert_eq!(confirmed, 14, "exactly what fits");
    let offer = mesh.offering(&offer.id).await;
    assert_eq!(offer.raised.expect("raised").amount_minor, 98_000);
    assert_eq!(offer.remaining.expect("remaining").amount_minor, 2_000);
    let mut debited = 0;
    for investor in &investors {
        if mesh.balance(investor).await == 3_000 {
            debited += 1;
        }
    }
    assert_eq!(debited, 14, "debits match confirmed investments");
}

#[tokio::test]
async fn insufficient_funds_fail_the_investment_and_release_its_reservation() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let ana = mesh.user("investor");
    mesh.deposit(&ana, 1_000).await;
    let offer = mesh.create(&producer, 100_000).await;
    let refused = mesh
        .invest(&ana, &offer.id, 5_000, "short")
        .await
        .expect_err("short of funds");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "INSUFFICIENT_FUNDS")
    );
    let again = mesh
        .invest(&ana, &offer.id, 5_000, "short")
        .await
        .expect_err("the first outcome again");
    assert_eq!(reason(&again), "INSUFFICIENT_FUNDS");
    let listed = mesh
        .market
        .clone()
        .list_investments(ana.call(ListInvestmentsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.investments.len(), 1);
    assert_eq!(listed.investments[0].status(), InvestmentStatus::Failed);
    let offer = mesh.offering(&offer.id).await;
    assert_eq!(offer.remaining.expect("remaining").amount_minor, 100_000);
    assert_eq!(mesh.balance(&ana).await, 1_000);
}

#[tokio::test]
async fn cancelling_refunds_every_investor_once_even_with_two_marketplaces() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let stranger = mesh.user("producer");
    let ana = mesh.user("investor");
    let bia = mesh.user("investor");
    mesh.deposit(&ana, 30_000).await;
    mesh.deposit(&bia, 30_000).await;
    let offer = mesh.create(&producer, 100_000).await;
    mesh.invest(&ana, &offer.id, 20_000, "a")
        .await
        .expect("ana");
    mesh.invest(&bia, &offer.id, 25_000, "b")
        .await
        .expect("bia");
    let cancel = |user: &User| {
        user.call(CancelOfferingRequest {
            offering_id: offer.id.clone(),
        })
    };
    let denied = mesh
        .market
        .clone()
        .cancel_offering(cancel(&stranger))
        .await
        .expect_err("not theirs");
    assert_eq!(
        (denied.code(), reason(&denied).as_str()),
        (Code::PermissionDenied, "NOT_OFFERING_PRODUCER")
    );
    let cancelled = mesh
        .market
        .clone()
        .cancel_offering(cancel(&producer))
        .await
        .expect("cancelled")
        .into_inner()
        .offering
        .expect("offering");
    assert_eq!(cancelled.status(), OfferingStatus::Cancelled);
    let twice = mesh
        .market
        .clone()
        .cancel_offering(cancel(&producer))
        .await
        .expect_err("already cancelled");
    assert_eq!(
        (twice.code(), reason(&twice).as_str()),
        (Code::FailedPrecondition, "OFFERING_TRANSITION_NOT_ALLOWED")
    );
    // A second marketplace process works the same queue at the same time.
    let other = marketplace_service(
        &mesh.pki,
        &mesh.marketplace_db,
        &mesh.wallet_addr.to_string(),
    )
    .await;
    let (one, two) = tokio::join!(mesh.marketplace.round(), other.round());
    one.expect("round");
    two.expect("round");
    mesh.settle_until("both refunds", || async {
        mesh.balance(&ana).await == 30_000 && mesh.balance(&bia).await == 30_000
    })
    .await;
    let refunds = count(
        &mesh.wallet_db.url(),
        "SELECT count(*)::bigint AS total FROM ledger_transactions WHERE kind = 'investment_refund'",
    )
    .await;
    assert_eq!(refunds, 2, "one refund per investment");
    let listed = mesh
        .market
        .clone()
        .list_investments(ana.call(ListInvestmentsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.investments[0].status(), InvestmentStatus::Refunded);
    assert_eq!(mesh.books().await.investments_clearing, 0);
    assert_eq!(
        mesh.balance(&producer).await,
        0,
        "no payout for a cancelled offering"
    );
}

#[tokio::test]
async fn offerings_past_their_deadline_close_once_with_two_marketplaces() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let ana = mesh.user("investor");
    mesh.deposit(&ana, 10_000).await;
    let offer = mesh.create(&producer, 100_000).await;
    mesh.invest(&ana, &offer.id, 10_000, "a")
        .await
        .expect("ana");
    let mut conn = db::connect_once(mesh.marketplace_db.url().expose())
        .await
        .expect("connect");
    conn.batch_execute(&format!(
        "UPDATE offerings SET funding_deadline = now() - interval '1 second' WHERE id = '{}'",
        offer.id
    ))
    .await
    .expect("the deadline passes");
    let other = marketplace_service(
        &mesh.pki,
        &mesh.marketplace_db,
        &mesh.wallet_addr.to_string(),
    )
    .await;
    let (one, two) = tokio::join!(mesh.marketplace.round(), other.round());
    assert_eq!(
        one.expect("round").closed + two.expect("round").closed,
        1,
        "closed by exactly one of them"
    );
    let closed = mesh.offering(&offer.id).await;
    assert_eq!(closed.status(), OfferingStatus::Cancelled);
    assert_eq!(
        closed.cancel_reason(),
        safra::marketplace::v1::CancelReason::FundingDeadlinePassed
    );
    mesh.settle_until("the refund", || async {
        mesh.balance(&ana).await == 10_000
    })
    .await;
    let cancelled_events = count(
        &mesh.marketplace_db.url(),
        "SELECT count(*)::bigint AS total FROM outbox WHERE event_type = 'safra.events.v1.OfferingCancelled'",
    )
    .await;
    assert_eq!(cancelled_events, 1);
}

async fn funded_offering(mesh: &MoneyMesh, producer: &User) -> Offering {
    let ana = mesh.user("investor");
    mesh.deposit(&ana, 100_000).await;
    let offer = mesh.create(producer, 100_000).await;
    mesh.invest(&ana, &offer.id, 100_000, "all")
        .await
        .expect("funds it");
    mesh.settle_until("the payout", || async {
        mesh.balance(producer).await >= 100_000
    })
    .await;
    mesh.offering(&offer.id).await
}

#[tokio::test]
async fn installments_are_paid_once_by_their_producer_only() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let stranger = mesh.user("producer");
    let open_offer = mesh.create(&producer, 50_000).await;
    let offer = funded_offering(&mesh, &producer).await;
    let pay = |user: &User, offering: &str, number: i32, key: &str| {
        let mut wallet = mesh.wallet.clone();
        let request = user.call(PayInstallmentRequest {
            offering_id: offering.to_owned(),
            installment_number: number,
            idempotency_key: key.to_owned(),
        });
        async move {
            wallet
                .pay_installment(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let paid = pay(&producer, &offer.id, 1, "p1").await.expect("paid");
    let payment = paid.payment.expect("payment");
    assert_eq!(payment.amount.expect("amount").amount_minor, 55_000);
    assert_eq!(mesh.balance(&producer).await, 45_000);
    let retried = pay(&producer, &offer.id, 1, "p1").await.expect("retry");
    assert_eq!(
        retried.payment.expect("payment").id,
        payment.id,
        "same payment"
    );
    let missing = Uuid::new_v4().to_string();
    for (payer, offering, number, key, code, why) in [
        (
            &producer,
            &offer.id,
            1,
            "p1-again",
            Code::AlreadyExists,
            "INSTALLMENT_ALREADY_PAID",
        ),
        (
            &stranger,
            &offer.id,
            2,
            "s",
            Code::PermissionDenied,
            "RESOURCE_NOT_OWNED",
        ),
        (
            &producer,
            &offer.id,
            3,
            "p3",
            Code::NotFound,
            "INSTALLMENT_NOT_FOUND",
        ),
        (
            &producer,
            &open_offer.id,
            1,
            "o1",
            Code::FailedPrecondition,
            "OFFERING_NOT_FUNDED",
        ),
        (
            &producer,
            &missing,
            1,
            "m1",
            Code::NotFound,
            "OFFERING_NOT_FOUND",
        ),
        // 45,000 left, 55,000 due.
        (
            &producer,
            &offer.id,
            2,
            "p2",
            Code::FailedPrecondition,
            "INSUFFICIENT_FUNDS",
        ),
    ] {
        let refused = pay(payer, offering, number, key).await.expect_err(why);
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (code, why),
            "{key}"
        );
    }
    let events = count(
        &mesh.wallet_db.url(),
        "SELECT count(*)::bigint AS total FROM outbox WHERE event_type = 'safra.events.v1.PaymentConfirmed'",
    )
    .await;
    assert_eq!(
        events, 1,
        "one PaymentConfirmed, in the payment's transaction"
    );
    assert_eq!(mesh.books().await.installments_clearing, 55_000);
}

#[tokio::test]
async fn wallet_credits_admit_each_caller_for_its_own_kinds_only() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let offer = funded_offering(&mesh, &producer).await;
    let credit = |kind: TransactionKind, key: &str| CreditRequest {
        owner_id: producer.id.to_string(),
        amount: Some(brl(1)),
        kind: kind as i32,
        offering_id: offer.id.clone(),
        reference_id: Uuid::new_v4().to_string(),
        idempotency_key: key.into(),
    };
    for (caller, kind) in [
        ("marketplace", TransactionKind::Distribution),
        ("distribution", TransactionKind::FundingPayout),
        ("distribution", TransactionKind::InvestmentRefund),
        ("gateway", TransactionKind::Distribution),
    ] {
        let denied = mesh
            .wallet_as(caller)
            .credit(credit(kind, "k"))
            .await
            .expect_err("outside its scope");
        assert_eq!(
            (denied.code(), reason(&denied).as_str()),
            (Code::PermissionDenied, "CALLER_NOT_ALLOWED"),
            "{caller} {kind:?}"
        );
    }
    // In scope, the clearing account still bounds what may be paid out:
    // nothing was paid in for installments yet.
    let uncovered = mesh
        .wallet_as("distribution")
        .credit(credit(TransactionKind::Distribution, "d"))
        .await
        .expect_err("nothing to distribute");
    assert_eq!(reason(&uncovered), "INSUFFICIENT_FUNDS");
    // And a second payout of the raised amount finds the account empty.
    let double = mesh
        .wallet_as("marketplace")
        .credit(CreditRequest {
            amount: Some(brl(100_000)),
            ..credit(TransactionKind::FundingPayout, "another-payout")
        })
        .await
        .expect_err("paid out already");
    assert_eq!(reason(&double), "INSUFFICIENT_FUNDS");
    assert_eq!(mesh.balance(&producer).await, 100_000);
}

#[tokio::test]
async fn offerings_filter_and_page_without_repeats_while_rows_arrive() {
    let mesh = spawn_money_mesh().await;
    let producer = mesh.user("producer");
    let other = mesh.user("producer");
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(mesh.create(&producer, 10_000).await.id);
    }
    mesh.create(&other, 10_000).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = mesh
            .market
            .clone()
            .list_offerings(ListOfferingsRequest {
                page_size: 2,
                page_token: token.clone(),
                producer_id: producer.id.to_string(),
                status: OfferingStatus::Open as i32,
                commodity: "soybean".into(),
                min_maturity_date: Some(day(300)),
                max_maturity_date: Some(day(400)),
            })
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.offerings.iter().map(|o| o.id.clone()));
        // Newer rows never shift the pages still to come.
        mesh.create(&producer, 10_000).await;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    mine.reverse();
    assert_eq!(seen, mine, "newest first, no repeats, no gaps");
    let none = mesh
        .market
        .clone()
        .list_offerings(ListOfferingsRequest {
            max_maturity_date: Some(day(10)),
            ..ListOfferingsRequest::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert!(none.offerings.is_empty(), "none matures that soon");
}
