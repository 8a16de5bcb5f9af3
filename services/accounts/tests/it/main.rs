//! The accounts service over its real stack: mutual TLS, the contract stage,
//! argon2id, a cloned PostgreSQL database, generated clients making calls.

use std::{net::SocketAddr, sync::Arc};

use safra::{
    accounts::v1::{
        GetJwksRequest, GetMeRequest, GetUserRequest, ListUsersRequest, LoginRequest,
        LoginResponse, LogoutRequest, RefreshRequest, RegisterRequest, Role,
        accounts_service_client::AccountsServiceClient,
        accounts_service_server::AccountsServiceServer,
    },
    contract::status,
    data::db::Database,
    identity::auth::{DEFAULT_ISSUER, TokenVerifier},
    mesh::Service,
    transport::client::MeshChannel,
    transport::server::MeshServer,
};
use safra_accounts::{
    api::{Accounts, TokenSettings},
    domain::{Argon2id, HashingPool, KeyEncryption, Password, PasswordHashing},
    store::{self, NewUser},
};
use safra_test_support::{TestDatabase, TestPki};
use tonic::{Code, Request, Status};

struct Running {
    client: AccountsServiceClient<MeshChannel>,
    database: TestDatabase,
    accounts: Accounts,
    addr: SocketAddr,
    _pki: TestPki,
}

async fn spawn_accounts() -> Running {
    let pki = TestPki::new();
    let database = TestDatabase::migrated("accounts", &safra_accounts::MIGRATIONS)
        .await
        .expect("database");
    let db = Database::connect(&database.config()).await.expect("pool");
    let hashing = HashingPool::new(Arc::new(Argon2id::new().expect("argon2")), 4).expect("hashing");
    let accounts = Accounts::new(
        db,
        hashing,
        KeyEncryption::new(&[9_u8; 32]).expect("key"),
        TokenSettings::default(),
    )
    .await
    .expect("accounts");
    let verifier = Arc::new(TokenVerifier::new(DEFAULT_ISSUER, accounts.key_source()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let server = MeshServer::new(Service::Accounts, pki.tls("accounts"), verifier)
        .expect("server")
        .add_service(AccountsServiceServer::new(accounts.clone()));
    tokio::spawn(server.serve(listener, &[], std::future::pending()));
    let channel =
        safra::transport::client::mesh_channel(&pki.tls("gateway"), "accounts", &addr.to_string())
            .expect("channel");
    Running {
        client: AccountsServiceClient::new(channel),
        database,
        accounts,
        addr,
        _pki: pki,
    }
}

fn register(email: &str, role: Role) -> RegisterRequest {
    RegisterRequest {
        email: email.into(),
        password: "correct horse battery".into(),
        display_name: "Ana".into(),
        role: role as i32,
    }
}

async fn login(client: &mut AccountsServiceClient<MeshChannel>, email: &str) -> LoginResponse {
    client
        .login(LoginRequest {
            email: email.into(),
            password: "correct horse battery".into(),
        })
        .await
        .expect("login")
        .into_inner()
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

fn reason(status: &Status) -> String {
    status::details(status)
        .error_info
        .map(|info| info.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn register_login_refresh_with_reuse_detection_and_jwks() {
    let mut running = spawn_accounts().await;
    let client = &mut running.client;
    let user = client
        .register(register("  Ana@Fazenda.com.BR ", Role::Producer))
        .await
        .expect("registered")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(user.email, "ana@fazenda.com.br", "normalised");

    let tokens = login(client, "ANA@fazenda.com.br").await;
    assert_eq!(
        (tokens.token_type.as_str(), tokens.expires_in),
        ("Bearer", 900)
    );
    let me = client
        .get_me(bearer(GetMeRequest {}, &tokens.access_token))
        .await
        .expect("me")
        .into_inner();
    assert_eq!(
        (me.id.as_str(), me.role()),
        (user.id.as_str(), Role::Producer)
    );

    let jwks = client
        .get_jwks(GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let header = jsonwebtoken_header_kid(&tokens.access_token);
    assert_eq!(
        jwks.keys[0].kid, header,
        "the token names the published key"
    );

    let rotated = client
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("refreshed")
        .into_inner();
    assert_ne!(rotated.refresh_token, tokens.refresh_token);
    client
        .get_me(bearer(GetMeRequest {}, &rotated.access_token))
        .await
        .expect("the new access token works");

    let replay = client
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token,
        })
        .await
        .expect_err("reuse");
    assert_eq!(
        (replay.code(), reason(&replay).as_str()),
        (Code::Unauthenticated, "REFRESH_TOKEN_REUSED")
    );
    let after = client
        .refresh(RefreshRequest {
            refresh_token: rotated.refresh_token,
        })
        .await
        .expect_err("the family is revoked");
    assert_eq!(reason(&after), "REFRESH_TOKEN_INVALID");
}

/// The `kid` in a JWT's header, read without verifying anything.
fn jsonwebtoken_header_kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("base64url");
    let text = String::from_utf8(bytes).expect("utf-8");
    let start = text.find("\"kid\":\"").expect("a kid") + 7;
    text[start..].split('"').next().expect("closed").to_owned()
}

#[tokio::test]
async fn a_duplicate_email_in_any_case_is_already_exists() {
    let mut running = spawn_accounts().await;
    running
        .client
        .register(register("ana@x.io", Role::Investor))
        .await
        .expect("first");
    let status = running
        .client
        .register(register("ANA@X.IO", Role::Investor))
        .await
        .expect_err("duplicate");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::AlreadyExists, "EMAIL_TAKEN")
    );
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_answer() {
    let mut running = spawn_accounts().await;
    running
        .client
        .register(register("ana@x.io", Role::Investor))
        .await
        .expect("registered");
    let wrong = running
        .client
        .login(LoginRequest {
            email: "ana@x.io".into(),
            password: "not the password".into(),
        })
        .await
        .expect_err("wrong password");
    let unknown = running
        .client
        .login(LoginRequest {
            email: "nobody@x.io".into(),
            password: "not the password".into(),
        })
        .await
        .expect_err("unknown email");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message())
    );
    assert_eq!(reason(&wrong), "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn only_admins_make_admins_read_others_and_list_users() {
    let mut running = spawn_accounts().await;
    let status = running
        .client
        .register(register("boss@x.io", Role::Admin))
        .await
        .expect_err("no self-made admins");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "ROLE_ASSIGNMENT_NOT_ALLOWED")
    );

    // The first admin comes from outside (bootstrap); here, straight into the store.
    let hash = Argon2id::new()
        .expect("argon2")
        .hash(&Password::new("correct horse battery").expect("valid"))
        .expect("hash");
    let mut conn = safra::data::db::connect_once(running.database.url().expose())
        .await
        .expect("connect");
    store::insert_user(
        &mut conn,
        &NewUser {
            id: uuid::Uuid::new_v4(),
            email: "admin@x.io",
            password_hash: &hash,
            display_name: "Admin",
            role: "admin",
        },
        |row| {
            safra::data::outbox::OutboxEvent::new(
                "accounts",
                format!("user:{}", row.id),
                &safra::events::v1::UserRegistered::default(),
            )
        },
    )
    .await
    .expect("admin");
    let client = &mut running.client;
    let investor = client
        .register(register("ana@x.io", Role::Investor))
        .await
        .expect("investor")
        .into_inner()
        .user
        .expect("user");
    let producer = client
        .register(register("bia@x.io", Role::Producer))
        .await
        .expect("producer")
        .into_inner()
        .user
        .expect("user");
    let admin = login(client, "admin@x.io").await.access_token;
    let ana = login(client, "ana@x.io").await.access_token;

    let first = client
        .list_users(bearer(
            ListUsersRequest {
                page_size: 2,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("admin lists")
        .into_inner();
    assert_eq!(first.users.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let rest = client
        .list_users(bearer(
            ListUsersRequest {
                page_size: 2,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(rest.users.len(), 1);
    assert!(rest.next_page_token.is_empty());
    let producers = client
        .list_users(bearer(
            ListUsersRequest {
                role: Role::Producer as i32,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(producers.users.len(), 1);
    let bad_token = client
        .list_users(bearer(
            ListUsersRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("not our token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);
    assert_eq!(
        status::details(&bad_token).field_violations[0].field,
        "page_token"
    );

    let denied = client
        .list_users(bearer(ListUsersRequest::default(), &ana))
        .await
        .expect_err("investors do not list users");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let status = client
        .get_user(bearer(
            GetUserRequest {
                user_id: producer.id,
            },
            &ana,
        ))
        .await
        .expect_err("another user's record");
    assert_eq!(reason(&status), "RESOURCE_NOT_OWNED");
    client
        .get_user(bearer(
            GetUserRequest {
                user_id: investor.id.clone(),
            },
            &ana,
        ))
        .await
        .expect("oneself");
    client
        .get_user(bearer(
            GetUserRequest {
                user_id: investor.id,
            },
            &admin,
        ))
        .await
        .expect("an admin reads anyone");
}

#[tokio::test]
async fn logout_ends_the_session_and_bad_input_is_refused_with_fields() {
    let mut running = spawn_accounts().await;
    let client = &mut running.client;
    client
        .register(register("ana@x.io", Role::Investor))
        .await
        .expect("registered");
    let tokens = login(client, "ana@x.io").await;
    client
        .logout(LogoutRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .expect("logged out");
    let status = client
        .refresh(RefreshRequest {
            refresh_token: tokens.refresh_token,
        })
        .await
        .expect_err("revoked");
    assert_eq!(reason(&status), "REFRESH_TOKEN_INVALID");

    let status = client
        .register(RegisterRequest {
            email: "not-an-email".into(),
            password: "short".into(),
            display_name: String::new(),
            role: Role::Investor as i32,
        })
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status::details(&status)
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["email", "password", "display_name"]);
}

#[tokio::test]
async fn the_first_admin_is_made_once_and_signs_in_and_keys_rotate() {
    let mut running = spawn_accounts().await;
    let made = running
        .accounts
        .ensure_admin("Admin@Safra.local", "a long admin password")
        .await
        .expect("made");
    assert!(made);
    let again = running
        .accounts
        .ensure_admin("admin@safra.local", "another long password")
        .await
        .expect("checked");
    assert!(!again, "made once");
    let tokens = running
        .client
        .login(LoginRequest {
            email: "admin@safra.local".into(),
            password: "a long admin password".into(),
        })
        .await
        .expect("the admin signs in")
        .into_inner();
    let me = running
        .client
        .get_me(bearer(GetMeRequest {}, &tokens.access_token))
        .await
        .expect("me")
        .into_inner();
    assert_eq!(me.role(), Role::Admin);

    let before = jsonwebtoken_header_kid(&tokens.access_token);
    let rotated = running.accounts.rotate_keys().await.expect("rotated");
    assert_ne!(rotated, before);
    let kids: Vec<String> = running
        .accounts
        .signing_keys()
        .await
        .expect("keys")
        .into_iter()
        .map(|key| key.kid)
        .collect();
    assert_eq!(kids, [rotated.clone(), before.clone()]);
    let fresh = running
        .client
        .login(LoginRequest {
            email: "admin@safra.local".into(),
            password: "a long admin password".into(),
        })
        .await
        .expect("login")
        .into_inner();
    assert_eq!(
        jsonwebtoken_header_kid(&fresh.access_token),
        rotated,
        "new tokens use the new key"
    );
    running
        .client
        .get_me(bearer(GetMeRequest {}, &tokens.access_token))
        .await
        .expect("a token of the old key still verifies");
    let jwks = running
        .client
        .get_jwks(GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert_eq!(jwks.keys.len(), 2, "both keys are published");
}

/// The guesses left in the login budget stored under `key`, if it has a row.
async fn budget(database: &TestDatabase, key: &str) -> Option<f64> {
    use diesel::{
        QueryableByName,
        sql_types::{Double, Text},
    };
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Double)]
        tokens: f64,
    }
    let mut conn = safra::data::db::connect_once(database.url().expose())
        .await
        .expect("connect");
    let rows: Vec<Row> = diesel::sql_query("SELECT tokens FROM login_budgets WHERE key = $1")
        .bind::<Text, _>(key)
        .load(&mut conn)
        .await
        .expect("query");
    rows.into_iter().next().map(|row| row.tokens)
}

fn wrong_login(email: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: "not the password".into(),
    }
}

/// `login` as the gateway sends it for a client at `address`.
fn login_from(address: &str, email: &str, password: &str) -> Request<LoginRequest> {
    let mut request = Request::new(LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().expect("ascii"));
    request
}

/// The seconds a refusal asks the caller to wait.
fn retry_seconds(status: &Status) -> i64 {
    status::details(status)
        .retry_info
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo")
        .seconds
}

/// `safra_accounts_logins_throttled` for `budget`, as /metrics would say it.
fn throttled_metric(accounts: &Accounts, budget: &str) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    accounts.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let series = format!("safra_accounts_logins_throttled_total{{budget=\"{budget}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |value| value.trim().parse().expect("a count"))
}

#[tokio::test]
async fn a_hundred_guesses_at_once_from_one_address_reach_the_password_check_five_times_and_none_fails()
 {
    let mut running = spawn_accounts().await;
    running
        .client
        .register(register("ana@x.io", Role::Investor))
        .await
        .expect("registered");
    let mut guesses = tokio::task::JoinSet::new();
    for guess in 0..100 {
        let mut client = running.client.clone();
        // The real password is one of them, as the attack report had it.
        let password = if guess == 50 {
            "correct horse battery"
        } else {
            "not the password"
        };
        guesses.spawn(async move {
            client
                .login(login_from("203.0.113.7", "ana@x.io", password))
                .await
                .map(drop)
        });
    }
    let (mut failed, mut signed_in, mut throttled) = (0, 0, 0);
    for outcome in guesses.join_all().await {
        match outcome {
            Ok(()) => signed_in += 1,
            Err(status) => match (status.code(), reason(&status).as_str()) {
                (Code::Unauthenticated, "INVALID_CREDENTIALS") => failed += 1,
                (Code::ResourceExhausted, "LOGIN_THROTTLED") => {
                    assert!((1..=60).contains(&retry_seconds(&status)), "{status:?}");
                    throttled += 1;
                }
                _ => panic!("neither a wrong password nor a throttle: {status:?}"),
            },
        }
    }
    // Five guesses from a full budget; a sign-in gives its guess back, so
    // one more may follow it.
    assert!(
        failed <= 5,
        "{failed} wrong guesses reached the password check"
    );
    assert!(failed + signed_in <= 6, "{failed} + {signed_in}");
    assert_eq!(failed + signed_in + throttled, 100);
    assert_eq!(
        throttled_metric(&running.accounts, "pair"),
        throttled as u64
    );

    // The spent budget holds for the right password too, from that address.
    let status = running
        .client
        .login(login_from(
            "203.0.113.7",
            "ana@x.io",
            "correct horse battery",
        ))
        .await
        .expect_err("spent");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::ResourceExhausted, "LOGIN_THROTTLED")
    );
    // Not from another address: the pair's budget is that address's alone.
    running
        .client
        .login(login_from(
            "192.0.2.1",
            " Ana@X.io ",
            "correct horse battery",
        ))
        .await
        .expect("another address signs in");
}

#[tokio::test]
async fn guesses_from_many_addresses_slow_the_account_but_never_lock_its_owner_out() {
    let mut running = spawn_accounts().await;
    running
        .client
        .register(register("ana@x.io", Role::Investor))
        .await
        .expect("registered");
    running
        .client
        .login(login_from("192.0.2.1", "ana@x.io", "correct horse battery"))
        .await
        .expect("the owner signs in, so 192.0.2.1 is known");

    // One guess from each of twelve addresses, under the e-mail's spellings
    // that find the same account.
    let (mut failed, mut throttled) = (0, 0);
    for host in 1..=12 {
        let email = if host % 2 == 0 {
            "ANA@x.io"
        } else {
            " ana@x.io"
        };
        let status = running
            .client
            .login(login_from(
                &format!("198.51.100.{host}"),
                email,
                "wrong wrong wrong",
            ))
            .await
            .expect_err("wrong");
        match (status.code(), reason(&status).as_str()) {
            (Code::Unauthenticated, "INVALID_CREDENTIALS") => failed += 1,
            (Code::ResourceExhausted, "LOGIN_THROTTLED") => {
                assert!((1..=10).contains(&retry_seconds(&status)), "{status:?}");
                throttled += 1;
            }
            _ => panic!("{status:?}"),
        }
    }
    // Ten at once, then one per 10 s (a slow machine may earn one back).
    assert!(
        (10..=11).contains(&failed),
        "{failed} reached the password check"
    );
    assert_eq!(failed + throttled, 12);
    assert_eq!(
        throttled_metric(&running.accounts, "account"),
        throttled as u64
    );

    // The owner, from the address they signed in from, is not slowed.
    running
        .client
        .login(login_from("192.0.2.1", "ana@x.io", "correct horse battery"))
        .await
        .expect("the owner is never locked out of a known address");
    // From a new address they wait as a guesser does, seconds, not minutes.
    let status = running
        .client
        .login(login_from(
            "198.51.100.99",
            "ana@x.io",
            "correct horse battery",
        ))
        .await
        .expect_err("slowed");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(retry_seconds(&status) <= 10, "{status:?}");
}

#[tokio::test]
async fn the_client_address_comes_from_x_forwarded_for_only_when_the_gateway_sends_it() {
    let mut running = spawn_accounts().await;
    let mut forwarded = Request::new(wrong_login("nobody@x.io"));
    forwarded.metadata_mut().insert(
        "x-forwarded-for",
        "203.0.113.7, 10.0.0.1".parse().expect("ascii"),
    );
    running.client.login(forwarded).await.expect_err("wrong");
    assert_eq!(
        budget(&running.database, "address:203.0.113.7").await,
        Some(29.0)
    );

    // The same header from another service is not believed.
    let channel = safra::transport::client::mesh_channel(
        &running._pki.tls("marketplace"),
        "accounts",
        &running.addr.to_string(),
    )
    .expect("channel");
    let mut request = Request::new(wrong_login("nobody@x.io"));
    request
        .metadata_mut()
        .insert("x-forwarded-for", "198.51.100.9".parse().expect("ascii"));
    AccountsServiceClient::new(channel)
        .login(request)
        .await
        .expect_err("wrong");
    assert_eq!(
        budget(&running.database, "address:198.51.100.9").await,
        None
    );
    assert_eq!(
        budget(&running.database, "address:127.0.0.1").await,
        Some(29.0)
    );
}

/// The audit log's actions, oldest first.
async fn audited(database: &TestDatabase) -> Vec<(String, bool)> {
    use diesel::{
        QueryableByName,
        sql_types::{Bool, Text},
    };
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        action: String,
        #[diesel(sql_type = Bool)]
        has_actor: bool,
    }
    let mut conn = safra::data::db::connect_once(database.url().expose())
        .await
        .expect("connect");
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT action, actor_id IS NOT NULL AS has_actor FROM audit_log ORDER BY create_time, id",
    )
    .load(&mut conn)
    .await
    .expect("query");
    rows.into_iter()
        .map(|row| (row.action, row.has_actor))
        .collect()
}

#[tokio::test]
async fn admin_acts_and_key_rotations_are_audited() {
    let mut running = spawn_accounts().await;
    running
        .accounts
        .ensure_admin("admin@safra.local", "a long admin password")
        .await
        .expect("admin");
    let admin = running
        .client
        .login(LoginRequest {
            email: "admin@safra.local".into(),
            password: "a long admin password".into(),
        })
        .await
        .expect("login")
        .into_inner()
        .access_token;
    running
        .client
        .register(bearer(register("second@safra.local", Role::Admin), &admin))
        .await
        .expect("an admin makes an admin");
    running
        .client
        .register(register("ana@x.io", Role::Investor))
        .await
        .expect("self-registration is not audited");
    running.accounts.rotate_keys().await.expect("rotated");
    assert_eq!(
        audited(&running.database).await,
        [
            ("signing_key.rotated".to_owned(), false), // the first key, made at start
            ("admin.bootstrapped".to_owned(), false),
            ("user.created_by_admin".to_owned(), true),
            ("signing_key.rotated".to_owned(), false),
        ]
    );
}

#[derive(diesel::QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    aggregate_key: String,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    payload: Vec<u8>,
}

#[tokio::test]
async fn registering_writes_user_registered_with_the_user_and_a_refused_one_writes_nothing() {
    use prost::Message;

    let mut running = spawn_accounts().await;
    let user = running
        .client
        .register(register("ana@x.io", Role::Producer))
        .await
        .expect("registered")
        .into_inner()
        .user
        .expect("user");
    running
        .client
        .register(register("ANA@x.io", Role::Investor))
        .await
        .expect_err("taken");
    let mut conn = safra::data::db::connect_once(running.database.url().expose())
        .await
        .expect("connect");
    let rows: Vec<OutboxRow> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT aggregate_key, payload FROM outbox WHERE event_type = 'safra.events.v1.UserRegistered'",
        ),
        &mut conn,
    )
    .await
    .expect("outbox");
    assert_eq!(rows.len(), 1, "one event, for the user that was stored");
    assert_eq!(rows[0].aggregate_key, format!("user:{}", user.id));
    let envelope =
        safra::events::v1::Envelope::decode(rows[0].payload.as_slice()).expect("an envelope");
    assert_eq!(
        (envelope.r#type.as_str(), envelope.producer.as_str()),
        ("safra.events.v1.UserRegistered", "accounts")
    );
    let payload = envelope.payload.expect("payload");
    assert_eq!(
        payload.type_url,
        "type.googleapis.com/safra.events.v1.UserRegistered"
    );
    let registered =
        safra::events::v1::UserRegistered::decode(payload.value.as_slice()).expect("decodes");
    assert_eq!(
        (
            registered.user_id.as_str(),
            registered.email.as_str(),
            registered.role()
        ),
        (user.id.as_str(), "ana@x.io", Role::Producer)
    );
    assert_eq!(registered.register_time, user.create_time);
}
