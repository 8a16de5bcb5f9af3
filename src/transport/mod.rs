//! How calls travel between mesh processes: write coalescing on every
//! connection, mesh channels for typed stubs (balancing, retries,
//! deadlines, token forwarding) and the one server builder.

#[cfg(feature = "client")]
pub mod client;
pub mod coalesce;
#[cfg(feature = "server")]
pub mod server;
