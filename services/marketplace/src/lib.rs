//! The marketplace service: offerings (CPRs) and the investments in them.
//!
//! It owns the database `safra_marketplace`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/marketplace`) and its
//! diesel schema. `safra serve marketplace` runs it; each RPC's path is
//! `api.rs` (conversions, and the background task), `domain.rs` (rules)
//! and `store.rs` (queries).

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod api;
pub mod domain;
pub mod schema;
pub mod store;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Marketplace;

/// The migrations of `safra_marketplace`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/marketplace");
