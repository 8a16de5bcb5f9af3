//! A service's data (feature `db`): the PostgreSQL pool, migrations and
//! transactions, keyset pagination as every List RPC does it, and the
//! outbox writer that commits events with the change they describe
//! (feature `events`).

pub mod db;
#[cfg(feature = "events")]
pub mod outbox;
pub mod paging;
