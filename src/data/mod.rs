//! A service's data: keyset pagination as every List RPC does it (the edge
//! too), and with feature `db` the PostgreSQL pool, migrations and
//! transactions, and the outbox writer that commits events with the change
//! they describe (feature `events`).

#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "events")]
pub mod outbox;
pub mod paging;
#[cfg(feature = "db")]
pub mod postgres_tls;
#[cfg(feature = "db")]
pub mod statement;
