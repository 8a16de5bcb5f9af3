//! Delivery of domain events (feature `events`) over the PostgreSQL
//! transport: its own database (`safra_events`, migrated with
//! [`MIGRATIONS`]) holds the append-only event log every service's relay
//! appends to and a cursor per subscriber. Each service keeps its outbox,
//! handled event ids and parked events in its own database, so a
//! service's database is read by nobody else; the bus plays the part a
//! broker plays.
//!
//! - [`relay`]: publishes a service's outbox rows to the log, in order per
//!   aggregate, marking them only once the log has them.
//! - [`subscriber`]: a competing consumer: claims its cursor, handles each
//!   event with the handled id recorded in the same transaction as the
//!   effect (a redelivered event is a no-op), retries failures with
//!   backoff and jitter, parks an event that keeps failing, moves on.
//! - [`postgres`]: the log itself.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use crate::data::db::DbError;

pub mod postgres;
pub mod relay;
pub mod subscriber;

/// The migrations of the bus database (the event log and the cursors).
pub static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/bus");

/// What can go wrong moving events.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A database (the bus, or the service's own) failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// An envelope in the log does not decode.
    #[error("event {0} has an envelope that does not decode")]
    Envelope(uuid::Uuid),
}

impl From<diesel::result::Error> for BusError {
    fn from(error: diesel::result::Error) -> Self {
        BusError::Database(DbError::Query(error))
    }
}
