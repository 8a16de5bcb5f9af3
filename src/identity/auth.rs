//! Access tokens: Ed25519 JWTs that accounts signs and every service
//! verifies for itself.
//!
//! Verification accepts exactly one algorithm (EdDSA) with a `kid` naming a
//! key of the JWKS; `alg: none`, HMAC with the public key as secret or any
//! other algorithm is refused before a key is touched. Issuer, the mesh-wide
//! audience `safra`, `exp` and `nbf` are checked with a small skew. The JWKS
//! is cached and fetched again when a token names an unknown `kid`, at most
//! once per [`MIN_REFRESH_INTERVAL`], so a flood of made-up kids cannot
//! hammer accounts. A verified token is cached by its SHA-256 until it
//! expires, so its signature is checked once, not on every call.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::r#type::v1::ErrorReason;

/// The audience of every token in the mesh.
pub const AUDIENCE: &str = "safra";
/// The issuer unless `SAFRA_JWT_ISSUER` says otherwise (a configuration
/// default, so configuration owns it and this module depends on it, not
/// the other way round).
pub use crate::config::DEFAULT_ISSUER;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The least time between two JWKS fetches caused by unknown kids.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// The `role` claims a token may carry.
pub const ROLES: [&str; 3] = ["investor", "producer", "admin"];
/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_LENGTH: usize = 8 * 1024;
/// Verified tokens kept in the cache at most.
pub const CACHE_CAPACITY: usize = 100_000;

/// The claims of a Safra access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`safra-accounts`).
    pub iss: String,
    /// Audience (`safra`).
    pub aud: String,
    /// The user's id.
    pub sub: String,
    /// `investor`, `producer` or `admin`.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Not valid before.
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// It expired (beyond the skew).
    #[error("the access token has expired")]
    Expired,
    /// Anything else: malformed, wrong algorithm, unknown key, bad
    /// signature, wrong issuer or audience, not yet valid, unknown role.
    #[error("the access token is invalid: {0}")]
    Invalid(String),
    /// The keys could not be fetched.
    #[error("the signing keys could not be fetched: {0}")]
    KeysUnavailable(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

impl AuthError {
    /// The contract's reason for this refusal.
    #[must_use]
    pub fn reason(&self) -> ErrorReason {
        match self {
            AuthError::Expired => ErrorReason::TokenExpired,
            AuthError::Invalid(_) => ErrorReason::TokenInvalid,
            AuthError::KeysUnavailable(_) => ErrorReason::Unavailable,
            AuthError::Signing(_) => ErrorReason::Internal,
        }
    }
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// A public verification key as the JWKS publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key id tokens name in their header.
    pub kid: String,
    /// The Ed25519 public key, base64url without padding (JWK `x`).
    pub x: String,
}

/// An Ed25519 signing key with its id.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key named `kid`.
    ///
    /// # Errors
    /// [`AuthError::Signing`] if the system's randomness fails.
    pub fn generate(kid: impl Into<String>) -> Result<Self, AuthError> {
        let rng = ring::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|error| AuthError::Signing(error.to_string()))?;
        Self::from_pkcs8(kid, document.as_ref())
    }

    /// A key from its PKCS#8 DER (as stored by accounts).
    ///
    /// # Errors
    /// [`AuthError::Signing`] for bytes that are not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8(kid: impl Into<String>, pkcs8: &[u8]) -> Result<Self, AuthError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|error| AuthError::Signing(error.to_string()))?;
        let kid = kid.into();
        let public = PublicKey {
            kid: kid.clone(),
            x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        };
        Ok(Self {
            kid,
            pkcs8: pkcs8.to_vec(),
            public,
        })
    }

    /// Its key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its PKCS#8 DER, for storage.
    #[must_use]
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Its public half, for the JWKS.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// Signs access tokens (the accounts service).
#[derive(Debug)]
pub struct TokenSigner {
    key: SigningKey,
    encoding: EncodingKey,
    issuer: String,
}

impl TokenSigner {
    /// Signs with `key` as `issuer`.
    #[must_use]
    pub fn new(key: SigningKey, issuer: impl Into<String>) -> Self {
        let encoding = EncodingKey::from_ed_der(key.pkcs8());
        Self {
            key,
            encoding,
            issuer: issuer.into(),
        }
    }

    /// The key in use.
    #[must_use]
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A token for `user_id` with `role`, valid from now for `ttl`.
    ///
    /// # Errors
    /// [`AuthError::Signing`].
    pub fn sign(
        &self,
        user_id: &str,
        role: &str,
        ttl: Duration,
    ) -> Result<(String, Claims), AuthError> {
        let now = now_seconds();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            sub: user_id.to_owned(),
            role: role.to_owned(),
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            iat: now,
            nbf: now,
            jti: uuid_like(),
        };
        let token = self.sign_claims(&claims)?;
        Ok((token, claims))
    }

    /// Signs arbitrary claims (tests use it for expired or foreign tokens).
    ///
    /// # Errors
    /// [`AuthError::Signing`].
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.key.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|error| AuthError::Signing(error.to_string()))
    }
}

/// 128 random bits as hex, for `jti`.
fn uuid_like() -> String {
    let mut bytes = [0_u8; 16];
    let filled = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    if filled.is_err() {
        // Uniqueness, not secrecy, is what a jti needs; fall back to time.
        bytes = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
            .to_le_bytes();
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A boxed future, for the object-safe [`KeySource`].
pub type KeysFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<PublicKey>, AuthError>> + Send + 'a>>;

/// Where the public keys come from: the accounts service's GetJwks over
/// mTLS in the mesh, the local signer inside accounts.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// The current key set.
    fn fetch(&self) -> KeysFuture<'_>;
}

struct CachedToken {
    claims: Claims,
}

/// Verifies access tokens with cached keys and a cache of verified tokens.
pub struct TokenVerifier {
    issuer: String,
    source: Arc<dyn KeySource>,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refresh: Duration,
    verified: Mutex<HashMap<[u8; 32], CachedToken>>,
    fetches: AtomicU64,
    cache_hits: AtomicU64,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for tokens of `issuer` with keys from `source`, fetched on
    /// first use.
    #[must_use]
    pub fn new(issuer: impl Into<String>, source: Arc<dyn KeySource>) -> Self {
        Self::with_refresh_interval(issuer, source, MIN_REFRESH_INTERVAL)
    }

    /// As [`TokenVerifier::new`] with another refetch interval (tests).
    #[must_use]
    pub fn with_refresh_interval(
        issuer: impl Into<String>,
        source: Arc<dyn KeySource>,
        min_refresh: Duration,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            source,
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refresh,
            verified: Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }
    }

    /// How many times the key set has been fetched.
    #[must_use]
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many verifications were answered from the cache.
    #[must_use]
    pub fn cache_hit_count(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// The verified claims of `token`.
    ///
    /// # Errors
    /// [`AuthError::Expired`], [`AuthError::Invalid`] or
    /// [`AuthError::KeysUnavailable`].
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LENGTH {
            return Err(AuthError::Invalid("too long".into()));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.cached(&digest) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(claims);
        }

        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Invalid(refusal(error.kind()).into()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Invalid(
                refusal(&ErrorKind::InvalidAlgorithm).into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("no kid in the header".into()))?;
        let key = self.key(&kid).await?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                kind => AuthError::Invalid(refusal(kind).into()),
            })?
            .claims;
        if !ROLES.contains(&claims.role.as_str()) {
            return Err(AuthError::Invalid(format!(
                "unknown role '{}'",
                claims.role
            )));
        }
        self.remember(digest, &claims);
        Ok(claims)
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Claims> {
        let cache = self.verified.lock().ok()?;
        let entry = cache.get(digest)?;
        let leeway = i64::try_from(LEEWAY.as_secs()).unwrap_or(0);
        (entry.claims.exp + leeway > now_seconds()).then(|| entry.claims.clone())
    }

    fn remember(&self, digest: [u8; 32], claims: &Claims) {
        let Ok(mut cache) = self.verified.lock() else {
            return;
        };
        if cache.len() >= CACHE_CAPACITY {
            let now = now_seconds();
            cache.retain(|_, entry| entry.claims.exp > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(
            digest,
            CachedToken {
                claims: claims.clone(),
            },
        );
    }

    fn known_key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    /// The key named `kid`, fetching the key set when it is unknown and the
    /// last fetch is old enough.
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.known_key(kid) {
            return Ok(key);
        }
        // One fetch at a time; whoever waited re-checks before fetching.
        let mut last_fetch = self.last_fetch.lock().await;
        if let Some(key) = self.known_key(kid) {
            return Ok(key);
        }
        if last_fetch.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Err(AuthError::Invalid(UNKNOWN_KEY.into()));
        }
        *last_fetch = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = self.source.fetch().await?;
        let mut keys = HashMap::new();
        for public in fetched {
            if let Ok(key) = DecodingKey::from_ed_components(&public.x) {
                keys.insert(public.kid, key);
            }
        }
        let found = keys.get(kid).cloned();
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
        found.ok_or_else(|| AuthError::Invalid(UNKNOWN_KEY.into()))
    }
}

/// Keys known in-process: what accounts itself uses to verify its tokens.
#[derive(Debug, Clone)]
pub struct StaticKeys(pub Arc<RwLock<Vec<PublicKey>>>);

impl KeySource for StaticKeys {
    fn fetch(&self) -> KeysFuture<'_> {
        let keys = self.0.read().map(|keys| keys.clone()).unwrap_or_default();
        Box::pin(async move { Ok(keys) })
    }
}

/// The bearer token of an `authorization` metadata value, if it is one.
#[must_use]
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The signed-in user of a request, put in its extensions by the server's
/// authorization stage once the token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The user's id (`sub`).
    pub user_id: String,
    /// `investor`, `producer` or `admin`.
    pub role: String,
    /// The bearer token itself, forwarded on calls made on the user's behalf.
    pub token: String,
    /// When the token expires, seconds since the epoch.
    pub expires_at: i64,
}

impl AuthenticatedUser {
    /// The user of a request served by a mesh server, if it carried a token.
    #[must_use]
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&AuthenticatedUser> {
        request.extensions().get::<AuthenticatedUser>()
    }
}

/// A token signed with a key the mesh does not publish.
const UNKNOWN_KEY: &str = "its key id (kid) is not one of the signing keys (JWKS)";

/// Why a token was refused, in the contract's words (the JWT's parts and
/// claims) rather than the library's: nothing of the decoder's internals,
/// and nothing a caller sent is echoed back.
fn refusal(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "it is not a JWT (three base64url parts: header, claims, signature)"
        }
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
            "its header or claims are not in the accepted form (alg EdDSA with a kid; iss, aud, sub, exp, nbf and role)"
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => "its algorithm is not accepted (only EdDSA)",
        ErrorKind::InvalidSignature => "its signature does not verify",
        ErrorKind::MissingRequiredClaim(_) => {
            "a required claim is missing (iss, aud, sub, exp and nbf are required)"
        }
        ErrorKind::InvalidIssuer => "it was not issued by this mesh's issuer",
        ErrorKind::InvalidAudience => "its audience is not safra",
        ErrorKind::InvalidSubject => "its subject is not accepted",
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
        ErrorKind::ExpiredSignature => "it has expired",
        _ => "it does not verify",
    }
}
