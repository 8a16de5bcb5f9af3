//! The notifications service: notifications per user, listed, marked read and streamed live.
//!
//! It owns the database `safra_notifications`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/notifications`) and its
//! diesel schema. `safra serve notifications` runs it: what each event tells
//! whom is in `domain.rs`, the queries in `store.rs`, the RPCs (the live
//! stream among them) and the event handler in `api.rs`.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod api;
pub mod domain;
pub mod schema;
pub mod store;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Notifications;

/// The migrations of `safra_notifications`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/notifications");
