//! The distribution service: the pro-rata distribution of each installment payment to the offering's holders.
//!
//! It owns the database `safra_distribution`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/distribution`) and its
//! diesel schema. `safra serve distribution` runs it; its RPCs land in `api.rs`,
//! `domain.rs` and `store.rs` as the service's issue builds them.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod schema;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Distribution;

/// The migrations of `safra_distribution`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/distribution");
