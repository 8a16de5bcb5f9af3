//! The rules of identity, independent of transport and storage: what a valid
//! email, password, display name and role are, how passwords are hashed
//! (argon2id at OWASP's parameters, with a bound on concurrent hashes) and
//! how a login is judged without telling an unknown email from a wrong
//! password.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// OWASP's argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
pub const ARGON2_PASSES: u32 = 2;
/// Parallel lanes.
pub const ARGON2_LANES: u32 = 1;
/// Passwords longer than this are refused before hashing (hashing floods).
pub const MAX_PASSWORD_CHARS: usize = 128;
/// The shortest password accepted at registration.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Everything that can go wrong in an accounts call, each mapped to one
/// gRPC status in `api.rs`.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// A value broke a domain rule.
    #[error("{field}: {source}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// The rule.
        source: DomainError,
    },
    /// The e-mail is registered already.
    #[error("the e-mail is already registered")]
    EmailTaken,
    /// Unknown e-mail or wrong password: one answer for both.
    #[error("the e-mail or the password is wrong")]
    InvalidCredentials,
    /// Unknown, expired or revoked refresh token.
    #[error("the refresh token is not valid")]
    RefreshInvalid,
    /// A used refresh token came back: its family is revoked.
    #[error("the refresh token was used before; every session of this login is revoked")]
    RefreshReused,
    /// No such user.
    #[error("no such user")]
    UserNotFound,
    /// Another user's record.
    #[error("only the user or an admin may read this user")]
    NotOwner,
    /// Only admins make admins.
    #[error("only an admin may register an admin")]
    RoleNotAssignable,
    /// Too many failed logins for this account or address.
    #[error("too many failed sign-ins; try again later")]
    Throttled(std::time::Duration),
    /// A page token this service did not make.
    #[error("the page token is not valid")]
    PageToken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] safra::data::db::DbError),
    /// Anything else: logged, never sent.
    #[error("{0}")]
    Internal(String),
}

/// A rule broken by a value from outside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not an e-mail address.
    #[error("must be an e-mail address")]
    InvalidEmail,
    /// Too short or too long.
    #[error("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long")]
    InvalidPassword,
    /// Empty or too long.
    #[error("must be 1 to 100 characters long")]
    InvalidDisplayName,
    /// Not one of the roles.
    #[error("is not a role")]
    InvalidRole,
}

/// A normalised e-mail address: trimmed, lower-case, `local@domain.tld`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Normalises and checks `raw`.
    ///
    /// # Errors
    /// [`DomainError::InvalidEmail`].
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let email = raw.trim().to_lowercase();
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(DomainError::InvalidEmail);
        };
        let valid = !local.is_empty()
            && local.len() <= 64
            && email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && !local.contains('@')
            && domain.contains('.')
            && domain
                .split('.')
                .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        if valid {
            Ok(Self(email))
        } else {
            Err(DomainError::InvalidEmail)
        }
    }

    /// The normalised address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password within the length bounds; its text never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// A new password, as registration accepts it.
    ///
    /// # Errors
    /// [`DomainError::InvalidPassword`].
    pub fn new(raw: &str) -> Result<Self, DomainError> {
        let length = raw.chars().count();
        if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&length) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::InvalidPassword)
        }
    }

    /// A password as a login presents it: only the upper bound applies, so
    /// an old shorter password still signs in.
    ///
    /// # Errors
    /// [`DomainError::InvalidPassword`] when longer than the cap.
    pub fn presented(raw: &str) -> Result<Self, DomainError> {
        if raw.chars().count() <= MAX_PASSWORD_CHARS {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::InvalidPassword)
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A display name: trimmed, 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Trims and checks `raw`.
    ///
    /// # Errors
    /// [`DomainError::InvalidDisplayName`].
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > 100 {
            Err(DomainError::InvalidDisplayName)
        } else {
            Ok(Self(name.to_owned()))
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user may do; the JWT `role` claim and the stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Buys stakes in offerings.
    Investor,
    /// Issues offerings and pays installments.
    Producer,
    /// Runs the platform.
    Admin,
}

impl Role {
    /// The claim and column value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Investor => "investor",
            Role::Producer => "producer",
            Role::Admin => "admin",
        }
    }

    /// The role named `value`.
    ///
    /// # Errors
    /// [`DomainError::InvalidRole`].
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        match value {
            "investor" => Ok(Role::Investor),
            "producer" => Ok(Role::Producer),
            "admin" => Ok(Role::Admin),
            _ => Err(DomainError::InvalidRole),
        }
    }
}

/// Hashes and verifies passwords. A trait so that tests can count
/// verifications without a clock.
pub trait PasswordHashing: Send + Sync + std::fmt::Debug {
    /// A PHC string for `password`.
    ///
    /// # Errors
    /// The hasher failed (randomness, parameters).
    fn hash(&self, password: &Password) -> Result<String, HashingError>;

    /// Whether `password` matches the PHC string `stored`, in constant time.
    fn verify(&self, password: &Password, stored: &str) -> bool;
}

/// Hashing could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashingError(String);

/// argon2id at [`ARGON2_MEMORY_KIB`], [`ARGON2_PASSES`], [`ARGON2_LANES`].
#[derive(Debug, Clone)]
pub struct Argon2id {
    params: Params,
}

impl Argon2id {
    /// The hasher at OWASP's parameters.
    ///
    /// # Errors
    /// Parameters argon2 refuses (never for the constants above).
    pub fn new() -> Result<Self, HashingError> {
        let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
            .map_err(|error| HashingError(error.to_string()))?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }
}

/// The most memory a stored hash may ask a verification for (a row written
/// with heavier parameters than ours still verifies, up to this bound).
const MAX_VERIFY_MEMORY_KIB: u32 = 256 * 1024;

/// Runs argon2 with working memory of its own, given back when the hash is
/// done. The binary's allocator (jemalloc, with background purging) hands
/// the 19 MiB back to the system once hashing stops, so an idle service
/// does not hold it; a burst of sign-ins reuses it meanwhile.
fn with_memory<T>(
    argon2: &Argon2<'_>,
    params: &Params,
    run: impl FnOnce(&Argon2<'_>, &mut [argon2::Block]) -> T,
) -> T {
    let mut blocks = vec![argon2::Block::default(); params.block_count()];
    run(argon2, &mut blocks)
}

impl PasswordHashing for Argon2id {
    fn hash(&self, password: &Password) -> Result<String, HashingError> {
        let failed = |error: &dyn std::fmt::Display| HashingError(error.to_string());
        let mut salt = [0_u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| HashingError("no randomness for the salt".into()))?;
        let salt_text = SaltString::encode_b64(&salt).map_err(|error| failed(&error))?;
        let output = with_memory(&self.argon2(), &self.params, |argon2, blocks| {
            Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
                argon2
                    .hash_password_into_with_memory(password.as_bytes(), &salt, out, blocks)
                    .map_err(|_| argon2::password_hash::Error::Crypto)
            })
        })
        .map_err(|error| failed(&error))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|error| failed(&error))?,
            salt: Some(salt_text.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    fn verify(&self, password: &Password, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
            Algorithm::try_from(parsed.algorithm),
            Params::try_from(&parsed),
            parsed.salt,
            parsed.hash,
        ) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(version) => version.unwrap_or_default(),
            Err(_) => return false,
        };
        let mut salt_bytes = [0_u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        if params.m_cost() > MAX_VERIFY_MEMORY_KIB {
            return false;
        }
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let computed = with_memory(&argon2, &params, |argon2, blocks| {
            Output::init_with(expected.len(), |out| {
                argon2
                    .hash_password_into_with_memory(password.as_bytes(), salt, out, blocks)
                    .map_err(|_| argon2::password_hash::Error::Crypto)
            })
        });
        // `Output`'s equality is constant-time.
        computed.is_ok_and(|computed| computed == expected)
    }
}

/// One piece of hashing work for the pool's threads, with the channel its
/// answer goes back on and the permit it holds until it is done.
enum Job {
    Hash(Password, oneshot::Sender<Result<String, HashingError>>),
    Verify(Password, Arc<str>, oneshot::Sender<bool>),
}

/// Runs hashes on its own threads, as many as it may hash at once, so that a
/// burst of logins queues instead of exhausting memory (19 MiB each, kept
/// per thread) or the runtime's blocking pool. The threads end when the
/// last clone of the pool is dropped.
#[derive(Debug, Clone)]
pub struct HashingPool {
    jobs: std::sync::mpsc::Sender<(Job, OwnedSemaphorePermit)>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified when the email is unknown so
    /// that both answers cost one argon2id verification.
    dummy: Arc<str>,
}

impl HashingPool {
    /// At most `concurrent` hashes at once, on as many threads.
    ///
    /// # Errors
    /// The dummy hash cannot be made, or a thread cannot be started.
    pub fn new(hasher: Arc<dyn PasswordHashing>, concurrent: usize) -> Result<Self, HashingError> {
        let mut random = [0_u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| HashingError("no randomness for the dummy hash".into()))?;
        let text: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        // On a thread of its own, so that argon2's kept memory goes with it.
        let dummy = std::thread::scope(|scope| {
            scope
                .spawn(|| hasher.hash(&Password(text)))
                .join()
                .map_err(|_| HashingError("the dummy hash panicked".into()))
        })??;
        let concurrent = concurrent.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<(Job, OwnedSemaphorePermit)>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for (index, hasher) in std::iter::repeat_n(hasher, concurrent).enumerate() {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || hashing_thread(&*hasher, &queue))
                .map_err(|error| HashingError(format!("cannot start a hashing thread: {error}")))?;
        }
        Ok(Self {
            jobs,
            permits: Arc::new(Semaphore::new(concurrent)),
            dummy: dummy.into(),
        })
    }

    async fn run(&self, job: Job) -> Result<(), HashingError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashingError("the hashing pool is closed".into()))?;
        self.jobs
            .send((job, permit))
            .map_err(|_| HashingError("the hashing threads stopped".into()))
    }

    /// The PHC hash of `password`.
    ///
    /// # Errors
    /// [`HashingError`].
    pub async fn hash(&self, password: Password) -> Result<String, HashingError> {
        let (answer, answered) = oneshot::channel();
        self.run(Job::Hash(password, answer)).await?;
        answered
            .await
            .map_err(|_| HashingError("a hashing thread failed".into()))?
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown
    /// email) the dummy hash is verified instead, and the answer is `false`.
    /// Either way exactly one verification runs.
    ///
    /// # Errors
    /// [`HashingError`] when the work could not run.
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> Result<bool, HashingError> {
        let known = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy.clone(), Arc::from);
        let (answer, answered) = oneshot::channel();
        self.run(Job::Verify(password, hash, answer)).await?;
        let matched = answered
            .await
            .map_err(|_| HashingError("a hashing thread failed".into()))?;
        Ok(known && matched)
    }
}

/// One of the pool's threads: takes jobs until every sender is gone. The
/// permit is released only when the work is done, even when the caller has
/// gone away, so abandoned logins cannot pile up work beyond the bound.
fn hashing_thread(
    hasher: &dyn PasswordHashing,
    queue: &std::sync::Mutex<std::sync::mpsc::Receiver<(Job, OwnedSemaphorePermit)>>,
) {
    loop {
        let next = match queue.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok((job, permit)) = next else {
            return;
        };
        match job {
            Job::Hash(password, answer) => {
                let _ = answer.send(hasher.hash(&password));
            }
            Job::Verify(password, stored, answer) => {
                let _ = answer.send(hasher.verify(&password, &stored));
            }
        }
        drop(permit);
    }
}

/// Encrypts signing keys at rest (AES-256-GCM under a key from
/// configuration), binding each ciphertext to its key id so that rows cannot
/// be swapped.
pub struct KeyEncryption {
    key: ring::aead::LessSafeKey,
}

impl std::fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyEncryption(***)")
    }
}

/// A sealed private key and the nonce it was sealed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// Ciphertext followed by the GCM tag.
    pub ciphertext: Vec<u8>,
    /// The 96-bit nonce, random per key.
    pub nonce: Vec<u8>,
}

/// A key that cannot be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key-encryption key is not 32 bytes.
    #[error("the key-encryption key must be 32 bytes")]
    BadKeyEncryptionKey,
    /// No randomness for a nonce.
    #[error("no randomness for a nonce")]
    NoRandomness,
    /// Wrong key-encryption key, another row's ciphertext, or tampering.
    #[error("the signing key cannot be decrypted")]
    CannotOpen,
}

impl KeyEncryption {
    /// Uses the 32 bytes `key`.
    ///
    /// # Errors
    /// [`KeyError::BadKeyEncryptionKey`].
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .map_err(|_| KeyError::BadKeyEncryptionKey)?;
        Ok(Self {
            key: ring::aead::LessSafeKey::new(unbound),
        })
    }

    /// Seals the PKCS#8 bytes of the key `kid`.
    ///
    /// # Errors
    /// [`KeyError::NoRandomness`].
    pub fn seal(&self, kid: &str, pkcs8: &[u8]) -> Result<SealedKey, KeyError> {
        let mut nonce = [0_u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| KeyError::NoRandomness)?;
        let mut ciphertext = pkcs8.to_vec();
        self.key
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(kid.as_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| KeyError::NoRandomness)?;
        Ok(SealedKey {
            ciphertext,
            nonce: nonce.to_vec(),
        })
    }

    /// Opens what [`KeyEncryption::seal`] made for `kid`.
    ///
    /// # Errors
    /// [`KeyError::CannotOpen`].
    pub fn open(&self, kid: &str, sealed: &SealedKey) -> Result<Vec<u8>, KeyError> {
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::CannotOpen)?;
        let mut buffer = sealed.ciphertext.clone();
        let plain = self
            .key
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(kid.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| KeyError::CannotOpen)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            Email::parse("  Ana@Fazenda.COM.br ").map(|e| e.as_str().to_owned()),
            Ok("ana@fazenda.com.br".to_owned())
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@x.io",
            "ana@localhost",
            "a b@x.io",
            "ana@-x.io",
        ] {
            assert_eq!(Email::parse(bad), Err(DomainError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn passwords_have_bounds_and_never_print() {
        assert_eq!(Password::new("short"), Err(DomainError::InvalidPassword));
        assert!(Password::new(&"x".repeat(129)).is_err());
        assert!(
            Password::presented("short").is_ok(),
            "old passwords still sign in"
        );
        assert!(
            Password::presented(&"x".repeat(129)).is_err(),
            "the cap applies to logins"
        );
        let password = Password::new("correct horse battery").expect("valid");
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn argon2id_hashes_verify_and_carry_the_owasp_parameters() {
        let hasher = Argon2id::new().expect("parameters");
        let password = Password::new("correct horse battery").expect("valid");
        let hash = hasher.hash(&password).expect("hashed");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(hasher.verify(&password, &hash));
        let wrong = Password::presented("correct horse battery!").expect("valid");
        assert!(!hasher.verify(&wrong, &hash));
        assert!(!hasher.verify(&password, "not a hash"));
    }

    #[test]
    fn hashes_agree_with_the_reference_phc_implementation() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};

        let ours = Argon2id::new().expect("parameters");
        let reference = ours.argon2();
        let password = Password::new("correct horse battery").expect("valid");
        // Rows written by the reference implementation still verify...
        let salt = SaltString::encode_b64(&[3_u8; 16]).expect("salt");
        let theirs = reference
            .hash_password(password.as_bytes(), &salt)
            .expect("reference hash")
            .to_string();
        assert!(ours.verify(&password, &theirs));
        // ...as ours do with it, and a lighter stored parameter set too.
        let hash = ours.hash(&password).expect("hashed");
        let parsed = PasswordHash::new(&hash).expect("phc");
        assert!(
            reference
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        );
        let light = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).expect("params"),
        )
        .hash_password(password.as_bytes(), &salt)
        .expect("light hash")
        .to_string();
        assert!(ours.verify(&password, &light));
        let other = Password::presented("correct horse battery?").expect("valid");
        assert!(!ours.verify(&other, &light));
    }

    /// Counts verifications; "hashes" are the password itself.
    #[derive(Debug, Default)]
    struct Counting {
        verifications: AtomicUsize,
    }

    impl PasswordHashing for Counting {
        fn hash(&self, password: &Password) -> Result<String, HashingError> {
            Ok(format!("plain:{}", password.0))
        }

        fn verify(&self, password: &Password, stored: &str) -> bool {
            self.verifications.fetch_add(1, Ordering::SeqCst);
            stored == format!("plain:{}", password.0)
        }
    }

    #[tokio::test]
    async fn an_unknown_email_costs_exactly_one_verification_too() {
        let counting = Arc::new(Counting::default());
        let pool = HashingPool::new(counting.clone(), 2).expect("pool");
        let password = || Password::presented("whatever password").expect("valid");

        let unknown = pool.verify(password(), None).await.expect("ran");
        assert!(!unknown);
        assert_eq!(counting.verifications.load(Ordering::SeqCst), 1);

        let stored = pool.hash(password()).await.expect("hashed");
        assert!(
            pool.verify(password(), Some(stored.clone()))
                .await
                .expect("ran")
        );
        let wrong = Password::presented("another password").expect("valid");
        assert!(!pool.verify(wrong, Some(stored)).await.expect("ran"));
        assert_eq!(
            counting.verifications.load(Ordering::SeqCst),
            3,
            "one per login, known or not"
        );
    }
}

/// A budget of login guesses: a token bucket that holds at most `burst`
/// guesses and earns one back every `refill`. A guess is taken before the
/// password is checked, so concurrent guesses cannot all slip past it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuessBudget {
    /// Guesses that may be made at once from a full budget.
    pub burst: f64,
    /// How long the budget takes to earn one guess back.
    pub refill: std::time::Duration,
}

/// Which budget a guess is drawn from; its name labels the throttle's
/// metric and starts its stored key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetScope {
    /// One account from one client address.
    Pair,
    /// One client address, for every account (everyone behind one NAT).
    Address,
    /// One account from every address but those it signed in from lately.
    Account,
}

impl BudgetScope {
    /// The stored key's prefix and the metric's label.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pair => "pair",
            Self::Address => "address",
            Self::Account => "account",
        }
    }
}

/// The budgets a login draws from (the book's "Signing in" explains them).
pub const PAIR_BUDGET: GuessBudget = GuessBudget {
    burst: 5.0,
    refill: std::time::Duration::from_secs(60),
};
/// See [`PAIR_BUDGET`].
pub const ADDRESS_BUDGET: GuessBudget = GuessBudget {
    burst: 30.0,
    refill: std::time::Duration::from_secs(6),
};
/// See [`PAIR_BUDGET`].
pub const ACCOUNT_BUDGET: GuessBudget = GuessBudget {
    burst: 10.0,
    refill: std::time::Duration::from_secs(10),
};
/// An address the account signed in from within this long skips the
/// account's budget, so guesses from elsewhere never lock its owner out.
pub const KNOWN_ADDRESS_DAYS: i64 = 30;

impl GuessBudget {
    /// The guesses left `elapsed` after the budget held `tokens`.
    #[must_use]
    pub fn refilled(self, tokens: f64, elapsed: std::time::Duration) -> f64 {
        let earned = elapsed.as_secs_f64() / self.refill.as_secs_f64().max(f64::EPSILON);
        (tokens.max(0.0) + earned).min(self.burst)
    }

    /// Takes one guess from a budget that holds `tokens` now: what it holds
    /// after, or how long until a guess can be taken.
    ///
    /// # Errors
    /// The wait, when less than one guess is left.
    pub fn take(self, tokens: f64) -> Result<f64, std::time::Duration> {
        if tokens >= 1.0 {
            Ok(tokens - 1.0)
        } else {
            let wait = (1.0 - tokens.max(0.0)) * self.refill.as_secs_f64();
            // Whole seconds, at least one: what Retry-After can say.
            Err(std::time::Duration::try_from_secs_f64(wait.ceil().max(1.0)).unwrap_or(self.refill))
        }
    }

    /// How long a budget left alone takes to fill up from empty: a row
    /// older than this says nothing a missing row would not.
    #[must_use]
    pub fn full_after(self) -> std::time::Duration {
        self.refill.mul_f64(self.burst)
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_budget_gives_its_burst_then_one_guess_per_refill_and_never_more_than_its_burst() {
        let budget = GuessBudget {
            burst: 3.0,
            refill: Duration::from_secs(10),
        };
        let mut tokens = budget.burst;
        for _ in 0..3 {
            tokens = budget.take(tokens).expect("within the burst");
        }
        assert_eq!(budget.take(tokens), Err(Duration::from_secs(10)));
        let later = budget.refilled(tokens, Duration::from_secs(4));
        assert_eq!(budget.take(later), Err(Duration::from_secs(6)));
        let refilled = budget.refilled(tokens, Duration::from_secs(10));
        assert_eq!(budget.take(refilled), Ok(0.0));
        assert_eq!(
            budget.refilled(0.0, Duration::from_secs(86_400 * 365)),
            3.0,
            "a year away fills it, no more"
        );
        assert_eq!(budget.full_after(), Duration::from_secs(30));
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_key_and_kid() {
        let encryption = KeyEncryption::new(&[7_u8; 32]).expect("32 bytes");
        let sealed = encryption.seal("key-1", b"pkcs8 bytes").expect("sealed");
        assert_ne!(sealed.ciphertext, b"pkcs8 bytes".to_vec());
        assert_eq!(
            encryption.open("key-1", &sealed),
            Ok(b"pkcs8 bytes".to_vec())
        );
        assert_eq!(
            encryption.open("key-2", &sealed),
            Err(KeyError::CannotOpen),
            "bound to its kid"
        );
        let other = KeyEncryption::new(&[8_u8; 32]).expect("32 bytes");
        assert_eq!(other.open("key-1", &sealed), Err(KeyError::CannotOpen));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(
            encryption.open("key-1", &tampered),
            Err(KeyError::CannotOpen)
        );
        assert_eq!(
            KeyEncryption::new(&[0_u8; 16]).err(),
            Some(KeyError::BadKeyEncryptionKey)
        );
    }
}
