//! The distribution service: the pro-rata distribution of each installment payment to the offering's holders.
//!
//! It owns the database `safra_distribution`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/distribution`) and its
//! diesel schema. `safra serve distribution` runs it; the split rule is in `domain.rs`
//! and the database's own split in `store.rs`; its RPCs and event handling
//! land in `api.rs` with the events issue.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod domain;
pub mod schema;
pub mod store;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Distribution;

/// The migrations of `safra_distribution`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/distribution");
