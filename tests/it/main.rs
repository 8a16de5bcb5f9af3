//! Whole-repository checks, one test binary: the contracts against
//! DESIGN.md, every service's migrations up, down and up again on a real
//! PostgreSQL, the per-test database harness, and the tidy rules of
//! docs/ARCHITECTURE.md, and mutual TLS between mesh processes.

mod abuse;
mod bus;
mod client;
mod contracts;
mod databases;
mod distribution;
mod gateway;
mod migrations;
mod money;
mod money_properties;
mod mtls;
mod postgres_tls;
mod retention;
mod runtime;
mod scripts;
mod serving;
mod statements;
mod tidy;
mod tokens;
mod tracing;
mod validation;

use std::path::{Path, PathBuf};

/// The repository root.
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the repository")
        .to_path_buf()
}
