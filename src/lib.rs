//! Safra's contracts and mesh runtime.
//!
//! This crate is the SDK of the mesh: the typed gRPC stubs generated from
//! `proto/` (one module per protobuf package, e.g. [`accounts::v1`]), the
//! descriptor set that lets the gateway and the services read the contracts'
//! annotations at run time ([`descriptor`]), typed configuration ([`config`]),
//! logging ([`telemetry`]), the catalogue of services and their ports
//! ([`mesh`]), mutual TLS ([`tls`]) and, behind features, mesh channels
//! ([`client`]), database access ([`db`]), serving ([`server`]) and the
//! development CA ([`certs`], feature `dev-certs`).
//!
//! Features: `client` (default) generates client stubs; `server` generates
//! server traits and brings health and reflection; `db` brings diesel-async;
//! `events` the event plumbing. An SDK user keeps the default and compiles
//! neither diesel nor the server side.

pub mod auth;
pub mod coalesce;
pub mod config;
pub mod contract;
pub mod descriptor;
pub mod gate;
pub mod mesh;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod validate;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "dev-certs")]
pub mod certs;
#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "events")]
pub mod outbox;
#[cfg(feature = "db")]
pub mod paging;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "test-contracts")]
pub mod testing;

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
