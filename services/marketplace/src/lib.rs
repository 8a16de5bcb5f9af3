//! The marketplace service: offerings (CPRs) and the investments in them.
//!
//! It owns the database `safra_marketplace`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/marketplace`) and its
//! diesel schema. `safra serve marketplace` runs it; its RPCs land in `api.rs`,
//! `domain.rs` and `store.rs` as the service's issue builds them.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod schema;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Marketplace;

/// The migrations of `safra_marketplace`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/marketplace");
