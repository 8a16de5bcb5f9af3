//! Safra's contracts and mesh runtime.
//!
//! This crate is the SDK of the mesh: the typed gRPC stubs generated from
//! `proto/` (one module per protobuf package, e.g. [`accounts::v1`]) and the
//! runtime every service and the gateway are built from, grouped by concern:
//!
//! - [`contract`]: the descriptor set and what it drives — the contract
//!   lint, the field-rule validator, the gate (authorization and
//!   validation) and errors as `google.rpc.Status`;
//! - [`identity`]: who is calling — mutual TLS with SPIFFE ids, access
//!   tokens, the development CA (feature `dev-certs`);
//! - [`transport`]: how calls travel — write coalescing, mesh channels for
//!   typed stubs (feature `client`), the server builder (feature `server`);
//! - [`observability`]: logging and traces, request metrics and the admin
//!   HTTP port (the last two with `server`);
//! - [`data`]: keyset paging; with feature `db` PostgreSQL pools and
//!   migrations, with `events` the outbox writer;
//! - [`bus`] (feature `events`): event delivery over PostgreSQL or
//!   RabbitMQ — the outbox relay, subscribers and the jobs monitor;
//! - [`config`] and [`mesh`]: typed settings and the catalogue of services.
//!
//! Features: `client` (default) generates client stubs; `server` generates
//! server traits and brings health and reflection; `db` brings diesel-async;
//! `events` the event plumbing. An SDK user keeps the default and compiles
//! neither diesel nor the server side.

#[cfg(feature = "events")]
pub mod bus;
pub mod config;
pub mod contract;
pub mod data;
pub mod identity;
pub mod mesh;
pub mod observability;
#[cfg(feature = "test-contracts")]
pub mod testing;
pub mod transport;

/// Every generated package, nested as its protobuf package name says
/// (`safra.accounts.v1` is `proto::safra::accounts::v1`), because generated
/// code refers to other packages by relative paths.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/safra_proto.rs"));
}

pub use proto::google;
pub use proto::safra::{
    accounts, distribution, events, jobs, marketplace, notifications, options, r#type, wallet,
};
