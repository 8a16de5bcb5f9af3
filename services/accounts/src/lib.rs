//! The accounts service: users, credentials, refresh-token families and signing keys: the mesh's identity provider.
//!
//! It owns the database `safra_accounts`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/accounts`) and its
//! diesel schema. `safra serve accounts` runs it; its RPCs land in `api.rs`,
//! `domain.rs` and `store.rs` as the service's issue builds them.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod domain;
pub mod schema;
pub mod store;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Accounts;

/// The migrations of `safra_accounts`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/accounts");
