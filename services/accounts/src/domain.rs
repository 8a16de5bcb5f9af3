//! The rules of identity, independent of transport and storage: what a valid
//! email, password, display name and role are, how passwords are hashed
//! (argon2id at OWASP's parameters, with a bound on concurrent hashes) and
//! how a login is judged without telling an unknown email from a wrong
//! password.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version,
    password_hash::SaltString,
};
use tokio::sync::Semaphore;

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

impl PasswordHashing for Argon2id {
    fn hash(&self, password: &Password) -> Result<String, HashingError> {
        let mut salt = [0_u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| HashingError("no randomness for the salt".into()))?;
        let salt =
            SaltString::encode_b64(&salt).map_err(|error| HashingError(error.to_string()))?;
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| HashingError(error.to_string()))
    }

    fn verify(&self, password: &Password, stored: &str) -> bool {
        PasswordHash::new(stored).is_ok_and(|parsed| {
            self.argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }
}

/// Runs hashes on blocking threads, a bounded number at once, so a burst of
/// logins queues instead of exhausting memory (19 MiB each) or the runtime.
#[derive(Debug, Clone)]
pub struct HashingPool {
    hasher: Arc<dyn PasswordHashing>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified when the email is unknown so
    /// that both answers cost one argon2id verification.
    dummy: Arc<str>,
}

impl HashingPool {
    /// At most `concurrent` hashes at once.
    ///
    /// # Errors
    /// The dummy hash cannot be made.
    pub fn new(hasher: Arc<dyn PasswordHashing>, concurrent: usize) -> Result<Self, HashingError> {
        let mut random = [0_u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| HashingError("no randomness for the dummy hash".into()))?;
        let text: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let dummy = hasher.hash(&Password(text))?;
        Ok(Self {
            hasher,
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            dummy: dummy.into(),
        })
    }

    /// The PHC hash of `password`.
    ///
    /// # Errors
    /// [`HashingError`].
    pub async fn hash(&self, password: Password) -> Result<String, HashingError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashingError("the hashing pool is closed".into()))?;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|error| HashingError(error.to_string()))?
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
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashingError("the hashing pool is closed".into()))?;
        let hasher = self.hasher.clone();
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.to_string());
        let matched = tokio::task::spawn_blocking(move || hasher.verify(&password, &hash))
            .await
            .map_err(|error| HashingError(error.to_string()))?;
        Ok(known && matched)
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
