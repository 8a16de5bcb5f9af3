//! The distribution service: the pro-rata distribution of each installment payment to the offering's holders.
//!
//! It owns the database `safra_distribution`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/distribution`) and its
//! diesel schema. `safra serve distribution` runs it: the split rule and who
//! sees what are in `domain.rs`, the queries (and the database's own split)
//! in `store.rs`, the RPCs, the PaymentConfirmed handler and the credit
//! worker in `api.rs`.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod api;
pub mod domain;
pub mod schema;
pub mod store;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Distribution;

/// The migrations of `safra_distribution`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/distribution");
