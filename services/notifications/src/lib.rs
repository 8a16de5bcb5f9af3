//! The notifications service: notifications per user, listed, marked read and streamed live.
//!
//! It owns the database `safra_notifications`; nobody else reads it. This crate holds
//! that database's migrations (embedded from `migrations/notifications`) and its
//! diesel schema. `safra serve notifications` runs it; its RPCs land in `api.rs`,
//! `domain.rs` and `store.rs` as the service's issue builds them.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use safra::mesh::Service;

pub mod schema;

/// Which service of the mesh this crate is.
pub const SERVICE: Service = Service::Notifications;

/// The migrations of `safra_notifications`, compiled into the binary.
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/notifications");
