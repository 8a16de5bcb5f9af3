//! The wallet service: wallets, the append-only double-entry ledger and installment payments.
//!
//! It owns the database `safra_wallet`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/wallet`) and its
//! diesel schema. `safra serve wallet` runs it; each RPC's path is
//! `api.rs` (conversions), `domain.rs` (rules) and `store.rs` (queries).

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod api;
pub mod domain;
pub mod schema;
pub mod store;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Wallet;

/// The migrations of `safra_wallet`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/wallet");
