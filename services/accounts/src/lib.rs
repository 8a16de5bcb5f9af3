//! The accounts service: users, credentials, refresh-token families and signing keys: the mesh's identity provider.
//!
//! It owns the database `safra_accounts`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/accounts`) and its
//! diesel schema. `safra serve accounts` runs it; its RPCs land in `api.rs`,
//! `domain.rs` and `store.rs` as the service's issue builds them.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod api;
pub mod domain;
pub mod schema;
pub mod store;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Accounts;

/// The migrations of `safra_accounts`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/accounts");

/// Reads the key-encryption key: 32 bytes, base64url (with or without
/// padding), as `SAFRA_KEY_ENCRYPTION_KEY` or `SAFRA_KEY_ENCRYPTION_KEY_FILE`.
///
/// # Errors
/// A value that is not 32 bytes of base64url, naming the variable.
pub fn key_encryption_key(value: &str) -> Result<domain::KeyEncryption, String> {
    use base64::Engine;
    let trimmed = value.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| "is not base64url".to_owned())?;
    domain::KeyEncryption::new(&bytes).map_err(|_| format!("must be 32 bytes, not {}", bytes.len()))
}
