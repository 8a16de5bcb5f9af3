//! Delivery of domain events (feature `events`), over one of two
//! transports behind [`Bus`]: PostgreSQL (the default: a database of its
//! own, `safra_events`, migrated with [`MIGRATIONS`], holds the append-only
//! event log and a cursor per subscriber) or RabbitMQ (`SAFRA_BROKER`).
//! Each service keeps its outbox, handled event ids and parked events in
//! its own database either way, so a service's database is read by nobody
//! else.
//!
//! - [`relay`]: publishes a service's outbox rows, in order per aggregate,
//!   marking them only once the transport confirmed them.
//! - [`subscriber`]: handles each event with the handled id recorded in the
//!   same transaction as the effect (a redelivered event is a no-op),
//!   retries failures with backoff and jitter, parks an event that keeps
//!   failing, moves on.
//! - [`postgres`]: the log; [`rabbit`]: the broker.

use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use crate::data::db::DbError;

#[cfg(feature = "server")]
pub mod jobs;
pub mod postgres;
pub mod rabbit;
pub mod relay;
pub mod retention;
pub mod subscriber;
pub mod subscriptions;

use postgres::{Outgoing, PgBus};
use rabbit::RabbitBus;

/// The transport events travel on.
#[derive(Debug, Clone)]
pub enum Bus {
    /// The PostgreSQL event log.
    Postgres(PgBus),
    /// A RabbitMQ broker.
    Rabbit(RabbitBus),
}

impl Bus {
    /// Publishes `events` in their order; when this returns `Ok`, the
    /// transport has them durably.
    ///
    /// # Errors
    /// [`BusError`]: nothing may then be marked published.
    pub async fn publish(&self, events: &[Outgoing]) -> Result<(), BusError> {
        match self {
            Bus::Postgres(bus) => bus.append(events).await,
            Bus::Rabbit(bus) => bus.publish(events).await,
        }
    }

    /// The transport's name, for logs and the jobs monitor.
    #[must_use]
    pub fn transport(&self) -> &'static str {
        match self {
            Bus::Postgres(_) => "postgres",
            Bus::Rabbit(_) => "rabbitmq",
        }
    }
}

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
    /// The broker is away or refused something.
    #[error("broker: {0}")]
    Broker(String),
}

impl From<diesel::result::Error> for BusError {
    fn from(error: diesel::result::Error) -> Self {
        BusError::Database(DbError::Query(error))
    }
}
