//! The accounts service's gRPC surface: converts requests into domain
//! values, runs the rules against the store, and converts back. Who may call
//! and which fields are valid were settled by the contract stage before a
//! handler runs; what is left here are the rules only the data can decide
//! (a taken e-mail, a wrong password, a reused refresh token, ownership).

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use prost::Message;
use safra::{
    accounts::v1::{
        GetJwksRequest, GetMeRequest, GetUserRequest, JsonWebKey, JsonWebKeySet, ListUsersRequest,
        ListUsersResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse,
        RefreshRequest, RefreshResponse, RegisterRequest, RegisterResponse, Role as ProtoRole,
        User, accounts_service_server::AccountsService,
    },
    contract::status::{self, Violation},
    data::db::Database,
    data::outbox::OutboxEvent,
    events::v1::UserRegistered,
    identity::auth::{
        AuthenticatedUser, KeySource, KeysFuture, PublicKey, SigningKey, TokenSigner,
    },
    identity::tls::PeerInfo,
    r#type::v1::{ErrorReason, PageToken},
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

pub use crate::domain::AccountsError;
use crate::{
    domain::{
        ACCOUNT_BUDGET, ADDRESS_BUDGET, BudgetScope, DisplayName, DomainError, Email, GuessBudget,
        HashingPool, KNOWN_ADDRESS_DAYS, KeyEncryption, PAIR_BUDGET, Password, Role, SealedKey,
    },
    store::{self, NewRefreshToken, NewSigningKey, NewUser, Rotation, StoreError, UserRow},
};

/// How often a replica deletes login budgets that have filled up again and
/// addresses no longer known.
const LOGIN_SWEEP_SECS: i64 = 60;
/// An account's key in the login budgets: its e-mail as the account is
/// found by (trimmed, lower-case), cut to the longest an e-mail may be.
const MAX_ACCOUNT_KEY_CHARS: usize = 254;

/// Page size when a list request names none, and the most it may ask for.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 500;

/// Token lifetimes and the issuer.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss` of every access token.
    pub issuer: String,
    /// How long an access token lives (15 minutes by default).
    pub access_lifetime: Duration,
    /// How long a refresh token lives (30 days by default).
    pub refresh_lifetime: Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: safra::identity::auth::DEFAULT_ISSUER.to_owned(),
            access_lifetime: Duration::from_secs(15 * 60),
            refresh_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
        }
    }
}

impl From<AccountsError> for Status {
    fn from(error: AccountsError) -> Self {
        let message = error.to_string();
        match error {
            AccountsError::Invalid { field, source } => status::invalid_argument(&[Violation {
                field: field.to_owned(),
                description: source.to_string(),
                reason: "INVALID",
            }]),
            AccountsError::EmailTaken => status::with_reason(
                Code::AlreadyExists,
                ErrorReason::EmailTaken,
                message,
                Vec::new(),
            ),
            AccountsError::InvalidCredentials => {
                status::unauthenticated(ErrorReason::InvalidCredentials, message)
            }
            AccountsError::RefreshInvalid => {
                status::unauthenticated(ErrorReason::RefreshTokenInvalid, message)
            }
            AccountsError::RefreshReused => {
                status::unauthenticated(ErrorReason::RefreshTokenReused, message)
            }
            AccountsError::UserNotFound => status::with_reason(
                Code::NotFound,
                ErrorReason::UserNotFound,
                message,
                Vec::new(),
            ),
            AccountsError::NotOwner => {
                status::permission_denied(ErrorReason::ResourceNotOwned, message)
            }
            AccountsError::RoleNotAssignable => {
                status::permission_denied(ErrorReason::RoleAssignmentNotAllowed, message)
            }
            AccountsError::Throttled(retry_after) => {
                status::resource_exhausted(ErrorReason::LoginThrottled, message, retry_after)
            }
            AccountsError::PageToken => status::invalid_argument(&[Violation {
                field: "page_token".into(),
                description: message,
                reason: "INVALID",
            }]),
            AccountsError::Database(error) => error.into(),
            AccountsError::Internal(cause) => status::internal(&cause),
        }
    }
}

fn invalid(field: &'static str) -> impl FnOnce(DomainError) -> AccountsError {
    move |source| AccountsError::Invalid { field, source }
}

/// The accounts service.
#[derive(Debug, Clone)]
pub struct Accounts {
    db: Database,
    hashing: HashingPool,
    keys: Arc<KeyEncryption>,
    tokens: TokenSettings,
    throttle: LoginThrottle,
}

/// The login throttle's figures and its sweep clock.
#[derive(Debug, Clone, Default)]
struct LoginThrottle {
    /// Logins refused, by the budget that was spent.
    refused: Family<ThrottleLabels, Counter>,
    /// When this replica last swept (Unix seconds).
    last_sweep: Arc<AtomicI64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ThrottleLabels {
    budget: &'static str,
}

impl Accounts {
    /// The service over `db`; a first signing key is made if none exists.
    ///
    /// # Errors
    /// The database or the key cannot be used.
    pub async fn new(
        db: Database,
        hashing: HashingPool,
        keys: KeyEncryption,
        tokens: TokenSettings,
    ) -> Result<Self, AccountsError> {
        let accounts = Self {
            db,
            hashing,
            keys: Arc::new(keys),
            tokens,
            throttle: LoginThrottle::default(),
        };
        let missing = {
            let mut conn = accounts.db.connection().await?;
            store::current_signing_key(&mut conn).await?.is_none()
        };
        if missing {
            accounts.rotate_keys().await?;
        }
        Ok(accounts)
    }

    /// Adds a new signing key; the previous one stops signing and stays
    /// published until its tokens have expired. Returns the new kid.
    ///
    /// # Errors
    /// The database or the key cannot be used.
    pub async fn rotate_keys(&self) -> Result<String, AccountsError> {
        let kid = Uuid::new_v4().simple().to_string();
        let key = SigningKey::generate(kid.clone())
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        let sealed = self
            .keys
            .seal(&kid, key.pkcs8())
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        let public = URL_SAFE_NO_PAD
            .decode(&key.public_key().x)
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        let mut conn = self.db.connection().await?;
        let lifetime = chrono::Duration::from_std(self.tokens.access_lifetime)
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        store::rotate_signing_key(
            &mut conn,
            &NewSigningKey {
                kid: &kid,
                public_key: &public,
                private_key_ciphertext: &sealed.ciphertext,
                nonce: &sealed.nonce,
            },
            Utc::now(),
            lifetime,
        )
        .await?;
        store::insert_audit(
            &mut conn,
            &audit(None, "signing_key.rotated", &kid, "EdDSA"),
        )
        .await?;
        Ok(kid)
    }

    /// Makes the first admin unless a user with `email` exists. Returns
    /// whether it was made. `safra up` calls it with `SAFRA_ADMIN_EMAIL`.
    ///
    /// # Errors
    /// Invalid e-mail or password, or the database.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<bool, AccountsError> {
        let email = Email::parse(email).map_err(invalid("email"))?;
        let password = Password::new(password).map_err(invalid("password"))?;
        let mut conn = self.db.connection().await?;
        if store::user_by_email(&mut conn, email.as_str())
            .await?
            .is_some()
        {
            return Ok(false);
        }
        drop(conn);
        let hash = self
            .hashing
            .hash(password)
            .await
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        let mut conn = self.db.connection().await?;
        let admin = NewUser {
            id: Uuid::new_v4(),
            email: email.as_str(),
            password_hash: &hash,
            display_name: "Administrator",
            role: Role::Admin.as_str(),
        };
        let record = audit(None, "admin.bootstrapped", &admin.id.to_string(), "admin");
        let created = store::insert_audited_user(&mut conn, &admin, &record, registered).await;
        match created {
            Ok(_) => Ok(true),
            // Another replica made it first.
            Err(StoreError::EmailTaken) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }

    /// The signing keys, newest first, for `safra keys list`.
    ///
    /// # Errors
    /// The database.
    pub async fn signing_keys(&self) -> Result<Vec<store::SigningKeyRow>, AccountsError> {
        let mut conn = self.db.connection().await?;
        Ok(store::all_signing_keys(&mut conn).await?)
    }

    /// Where this service's own verifier finds the published keys.
    #[must_use]
    pub fn key_source(&self) -> Arc<dyn KeySource> {
        Arc::new(StoredKeys {
            db: self.db.clone(),
        })
    }

    async fn signer(&self) -> Result<TokenSigner, AccountsError> {
        let mut conn = self.db.connection().await?;
        let row = store::current_signing_key(&mut conn)
            .await?
            .ok_or_else(|| AccountsError::Internal("no signing key".into()))?;
        let pkcs8 = self
            .keys
            .open(
                &row.kid,
                &SealedKey {
                    ciphertext: row.private_key_ciphertext,
                    nonce: row.nonce,
                },
            )
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        let key = SigningKey::from_pkcs8(row.kid, &pkcs8)
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        Ok(TokenSigner::new(key, self.tokens.issuer.clone()))
    }

    /// A fresh access token for `user`, signed with the current key.
    async fn access_token(&self, user: &UserRow) -> Result<String, AccountsError> {
        self.signer()
            .await?
            .sign(
                &user.id.to_string(),
                &user.role,
                self.tokens.access_lifetime,
            )
            .map(|(token, _)| token)
            .map_err(|error| AccountsError::Internal(error.to_string()))
    }

    /// An access token for `user` and a new refresh token in `family`.
    async fn issue(&self, user: &UserRow, family: Uuid) -> Result<(String, String), AccountsError> {
        let access = self.access_token(user).await?;
        let refresh = random_token()?;
        let mut conn = self.db.connection().await?;
        store::insert_refresh_token(
            &mut conn,
            &NewRefreshToken {
                family_id: family,
                user_id: user.id,
                token_hash: &hash_token(&refresh),
                expires_at: self.refresh_expiry()?,
            },
        )
        .await?;
        Ok((access, refresh))
    }

    fn refresh_expiry(&self) -> Result<DateTime<Utc>, AccountsError> {
        chrono::Duration::from_std(self.tokens.refresh_lifetime)
            .map(|lifetime| Utc::now() + lifetime)
            .map_err(|error| AccountsError::Internal(error.to_string()))
    }

    fn expires_in(&self) -> i32 {
        i32::try_from(self.tokens.access_lifetime.as_secs()).unwrap_or(i32::MAX)
    }
}

impl Accounts {
    /// Adds the service's own metrics (logins refused by the throttle) to
    /// those its `/metrics` serves.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "safra_accounts_logins_throttled",
            "Sign-ins refused before their password was checked, by the budget that was spent",
            self.throttle.refused.clone(),
        );
    }

    /// Draws the guess a login costs, before its password is checked:
    /// RESOURCE_EXHAUSTED when a budget is spent. Returns what was drawn, to
    /// give back if the password is right.
    async fn draw_login_guess(
        &self,
        account: &str,
        address: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<store::Draw>, AccountsError> {
        self.sweep_now_and_then(now).await;
        let mut conn = self.db.connection().await?;
        let known_since = now - chrono::Duration::days(KNOWN_ADDRESS_DAYS);
        let known = store::is_known_address(&mut conn, account, address, known_since).await?;
        let mut draws = vec![
            store::Draw {
                key: format!("pair:{account} {address}"),
                scope: BudgetScope::Pair,
                budget: PAIR_BUDGET,
            },
            store::Draw {
                key: format!("address:{address}"),
                scope: BudgetScope::Address,
                budget: ADDRESS_BUDGET,
            },
        ];
        if !known {
            draws.push(store::Draw {
                key: format!("account:{account}"),
                scope: BudgetScope::Account,
                budget: ACCOUNT_BUDGET,
            });
        }
        match store::draw_guess(&mut conn, &draws, now).await? {
            store::Drawn::Taken => Ok(draws),
            store::Drawn::Refused { scope, wait } => {
                self.throttle
                    .refused
                    .get_or_create(&ThrottleLabels {
                        budget: scope.name(),
                    })
                    .inc();
                Err(AccountsError::Throttled(wait))
            }
        }
    }

    /// Deletes full budgets and stale known addresses, once a minute per
    /// replica at most; a failure only waits for the next sweep.
    async fn sweep_now_and_then(&self, now: DateTime<Utc>) {
        let last = AtomicI64::load(&self.throttle.last_sweep, Ordering::Relaxed);
        if now.timestamp() - last < LOGIN_SWEEP_SECS
            || self
                .throttle
                .last_sweep
                .compare_exchange(last, now.timestamp(), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let full_after = [PAIR_BUDGET, ADDRESS_BUDGET, ACCOUNT_BUDGET]
            .into_iter()
            .map(GuessBudget::full_after)
            .max()
            .unwrap_or_default();
        let full_before = now - chrono::Duration::from_std(full_after).unwrap_or_default();
        let known_since = now - chrono::Duration::days(KNOWN_ADDRESS_DAYS);
        let swept = match self.db.connection().await {
            Ok(mut conn) => store::sweep_login_state(&mut conn, full_before, known_since)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = swept {
            tracing::warn!(%error, "sweeping login budgets failed; a later sign-in retries");
        }
    }

    /// The user whose e-mail and password these are. A malformed e-mail, an
    /// over-long password, an unknown e-mail and a wrong password are all
    /// the same `None`, and each costs one argon2id verification at most.
    async fn check_credentials(
        &self,
        body: &LoginRequest,
    ) -> Result<Option<UserRow>, AccountsError> {
        let (Ok(email), Ok(password)) = (
            Email::parse(&body.email),
            Password::presented(&body.password),
        ) else {
            return Ok(None);
        };
        let mut conn = self.db.connection().await?;
        let user = store::user_by_email(&mut conn, email.as_str()).await?;
        drop(conn);
        let matched = self
            .hashing
            .verify(
                password,
                user.as_ref().map(|user| user.password_hash.clone()),
            )
            .await
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        Ok(user.filter(|_| matched))
    }
}

/// The caller's address for throttling: what the gateway says in
/// `x-forwarded-for` (trusted only from the gateway's certificate), else
/// the connection's own address.
fn client_address<T>(request: &Request<T>) -> String {
    let peer = PeerInfo::of(request);
    let from_gateway = peer.and_then(|peer| peer.service.as_deref()) == Some("gateway");
    if from_gateway
        && let Some(forwarded) = request
            .metadata()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    {
        return forwarded.to_owned();
    }
    peer.and_then(|peer| peer.remote_addr)
        .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string())
}

/// An audit record of `action` on `subject` by `actor`, in the current trace.
fn audit(actor: Option<Uuid>, action: &str, subject: &str, detail: &str) -> store::NewAudit {
    store::NewAudit {
        actor_id: actor,
        action: action.to_owned(),
        subject: Some(subject.to_owned()),
        detail: detail.to_owned(),
        trace_id: safra::observability::telemetry::current_trace_id(),
    }
}

/// The UserRegistered event of a stored user, for the outbox.
fn registered(row: &UserRow) -> OutboxEvent {
    OutboxEvent::new(
        "accounts",
        format!("user:{}", row.id),
        &UserRegistered {
            user_id: row.id.to_string(),
            email: row.email.clone(),
            display_name: row.display_name.clone(),
            role: proto_role(&row.role) as i32,
            register_time: Some(timestamp(row.create_time)),
        },
    )
}

/// 256 random bits, base64url: an opaque refresh token.
fn random_token() -> Result<String, AccountsError> {
    let mut bytes = [0_u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| AccountsError::Internal("no randomness for a token".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Refresh tokens are stored as their SHA-256 only.
fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The published keys, read from the database: accounts verifies the
/// tokens it signs with the same key set it publishes.
#[derive(Debug, Clone)]
struct StoredKeys {
    db: Database,
}

impl KeySource for StoredKeys {
    fn fetch(&self) -> KeysFuture<'_> {
        Box::pin(async move {
            let mut conn = self.db.connection().await.map_err(|error| {
                safra::identity::auth::AuthError::KeysUnavailable(error.to_string())
            })?;
            let rows = store::published_signing_keys(&mut conn, Utc::now())
                .await
                .map_err(|error| {
                    safra::identity::auth::AuthError::KeysUnavailable(error.to_string())
                })?;
            Ok(rows
                .into_iter()
                .map(|row| PublicKey {
                    kid: row.kid,
                    x: URL_SAFE_NO_PAD.encode(row.public_key),
                })
                .collect())
        })
    }
}

fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn proto_role(role: &str) -> ProtoRole {
    match Role::parse(role) {
        Ok(Role::Investor) => ProtoRole::Investor,
        Ok(Role::Producer) => ProtoRole::Producer,
        Ok(Role::Admin) => ProtoRole::Admin,
        Err(_) => ProtoRole::Unspecified,
    }
}

fn domain_role(role: ProtoRole) -> Result<Role, DomainError> {
    match role {
        ProtoRole::Investor => Ok(Role::Investor),
        ProtoRole::Producer => Ok(Role::Producer),
        ProtoRole::Admin => Ok(Role::Admin),
        ProtoRole::Unspecified => Err(DomainError::InvalidRole),
    }
}

fn user_message(row: &UserRow) -> User {
    User {
        id: row.id.to_string(),
        email: row.email.clone(),
        display_name: row.display_name.clone(),
        role: proto_role(&row.role) as i32,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn page_token(row: &UserRow) -> String {
    let token = PageToken {
        create_time: Some(timestamp(row.create_time)),
        id: row.id.to_string(),
    };
    URL_SAFE_NO_PAD.encode(token.encode_to_vec())
}

fn parse_page_token(token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, AccountsError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| AccountsError::PageToken)?;
    let token = PageToken::decode(bytes.as_slice()).map_err(|_| AccountsError::PageToken)?;
    let time = token.create_time.ok_or(AccountsError::PageToken)?;
    let time = DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).unwrap_or(0))
        .ok_or(AccountsError::PageToken)?;
    let id = Uuid::parse_str(&token.id).map_err(|_| AccountsError::PageToken)?;
    Ok(Some((time, id)))
}

fn caller<T>(request: &Request<T>) -> Result<AuthenticatedUser, AccountsError> {
    // The contract stage admits signed-in methods only with a user.
    AuthenticatedUser::of(request)
        .cloned()
        .ok_or_else(|| AccountsError::Internal("a signed-in method ran without a user".into()))
}

#[tonic::async_trait]
impl AccountsService for Accounts {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let admin_caller = AuthenticatedUser::of(&request)
            .filter(|user| user.role == "admin")
            .and_then(|user| Uuid::parse_str(&user.user_id).ok());
        let body = request.into_inner();
        let email = Email::parse(&body.email).map_err(invalid("email"))?;
        let password = Password::new(&body.password).map_err(invalid("password"))?;
        let name = DisplayName::parse(&body.display_name).map_err(invalid("display_name"))?;
        let role = domain_role(body.role()).map_err(invalid("role"))?;
        if role == Role::Admin && admin_caller.is_none() {
            return Err(AccountsError::RoleNotAssignable.into());
        }
        let hash = self
            .hashing
            .hash(password)
            .await
            .map_err(|error| AccountsError::Internal(error.to_string()))?;
        let mut conn = self.db.connection().await.map_err(AccountsError::from)?;
        let user = NewUser {
            id: Uuid::new_v4(),
            email: email.as_str(),
            password_hash: &hash,
            display_name: name.as_str(),
            role: role.as_str(),
        };
        let row = match admin_caller {
            // What an admin does to accounts is audited, with the user, atomically.
            Some(admin) => {
                store::insert_audited_user(
                    &mut conn,
                    &user,
                    &audit(
                        Some(admin),
                        "user.created_by_admin",
                        &user.id.to_string(),
                        role.as_str(),
                    ),
                    registered,
                )
                .await
            }
            None => store::insert_user(&mut conn, &user, registered).await,
        }
        .map_err(AccountsError::from)?;
        Ok(Response::new(RegisterResponse {
            user: Some(user_message(&row)),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let address = client_address(&request);
        let body = request.into_inner();
        let account: String = body
            .email
            .trim()
            .to_lowercase()
            .chars()
            .take(MAX_ACCOUNT_KEY_CHARS)
            .collect();
        let now = Utc::now();
        let drawn = self.draw_login_guess(&account, &address, now).await?;
        let Some(user) = self.check_credentials(&body).await? else {
            return Err(AccountsError::InvalidCredentials.into());
        };
        let mut conn = self.db.connection().await.map_err(AccountsError::from)?;
        store::return_guess(&mut conn, &drawn)
            .await
            .map_err(AccountsError::from)?;
        store::remember_address(&mut conn, &user.email, &address, now)
            .await
            .map_err(AccountsError::from)?;
        drop(conn);
        let (access_token, refresh_token) = self.issue(&user, Uuid::new_v4()).await?;
        Ok(Response::new(LoginResponse {
            access_token,
            refresh_token,
            expires_in: self.expires_in(),
            token_type: "Bearer".into(),
        }))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let presented = hash_token(&request.into_inner().refresh_token);
        let successor = random_token()?;
        let mut conn = self.db.connection().await.map_err(AccountsError::from)?;
        let outcome = store::rotate_refresh_token(
            &mut conn,
            &presented,
            &hash_token(&successor),
            self.refresh_expiry()?,
            Utc::now(),
        )
        .await
        .map_err(AccountsError::from)?;
        let user_id = match outcome {
            Rotation::Rotated { user_id } => user_id,
            Rotation::Reused => return Err(AccountsError::RefreshReused.into()),
            Rotation::Invalid => return Err(AccountsError::RefreshInvalid.into()),
        };
        let user = store::user_by_id(&mut conn, user_id)
            .await
            .map_err(AccountsError::from)?
            .ok_or(AccountsError::RefreshInvalid)?;
        drop(conn);
        let access_token = self.access_token(&user).await?;
        Ok(Response::new(RefreshResponse {
            access_token,
            refresh_token: successor,
            expires_in: self.expires_in(),
            token_type: "Bearer".into(),
        }))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let presented = hash_token(&request.into_inner().refresh_token);
        let mut conn = self.db.connection().await.map_err(AccountsError::from)?;
        // Logging out twice, or with a stale token, is not an error worth telling.
        store::revoke_family_of(&mut conn, &presented, Utc::now())
            .await
            .map_err(AccountsError::from)?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<User>, Status> {
        let me = caller(&request)?;
        let id = Uuid::parse_str(&me.user_id).map_err(|_| AccountsError::UserNotFound)?;
        let mut conn = self.db.connection().await.map_err(AccountsError::from)?;
        let row = store::user_by_id(&mut conn, id)
            .await
            .map_err(AccountsError::from)?
            .ok_or(AccountsError::UserNotFound)?;
        Ok(Response::new(user_message(&row)))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let me = caller(&request)?;
        let wanted = request.get_ref().user_id.clone();
        if me.role != "admin" && me.user_id != wanted {
            return Err(AccountsError::NotOwner.into());
        }
        let id = Uuid::parse_str(&wanted).map_err(|_| AccountsError::UserNotFound)?;
        let mut conn = self.db.connection().await.map_err(AccountsError::from)?;
        let row = store::user_by_id(&mut conn, id)
            .await
            .map_err(AccountsError::from)?
            .ok_or(AccountsError::UserNotFound)?;
        Ok(Response::new(user_message(&row)))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let body = request.into_inner();
        let size = match i64::from(body.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let after = parse_page_token(&body.page_token)?;
        let role = match body.role() {
            ProtoRole::Unspecified => None,
            role => Some(domain_role(role).map_err(invalid("role"))?.as_str()),
        };
        let mut conn = self.db.connection().await.map_err(AccountsError::from)?;
        // One more than asked tells whether another page follows.
        let mut rows = store::list_users(&mut conn, role, after, size + 1)
            .await
            .map_err(AccountsError::from)?;
        let next_page_token = if rows.len() > usize::try_from(size).unwrap_or(usize::MAX) {
            rows.truncate(usize::try_from(size).unwrap_or(0));
            rows.last().map(page_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListUsersResponse {
            users: rows.iter().map(user_message).collect(),
            next_page_token,
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<JsonWebKeySet>, Status> {
        let keys = StoredKeys {
            db: self.db.clone(),
        }
        .fetch()
        .await
        .map_err(|error| AccountsError::Internal(error.to_string()))?;
        Ok(Response::new(JsonWebKeySet {
            keys: keys
                .into_iter()
                .map(|key| JsonWebKey {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    kid: key.kid,
                    x: key.x,
                    alg: "EdDSA".into(),
                    r#use: "sig".into(),
                })
                .collect(),
        }))
    }
}
