//! The one `safra` binary. `up` runs the whole mesh on this machine, each
//! service and the gateway as a child process of this same binary;
//! `serve <name>` runs one of them (what `up`, the container image and the
//! Helm chart start); `certs` makes the development CA and certificates;
//! `keys` rotates and lists the token-signing keys;
//! `migrate` applies, reverts or lists migrations; `docs` prints the
//! contracts' OpenAPI document or API reference.
//!
//! Errors reach the user as one line on stderr and a non-zero exit.

mod catalogue;
mod certs;
mod docs;
mod keys;
mod migrate;
mod postgres;
mod serve;
mod shutdown;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc rather than glibc's malloc: under load, glibc's allocator was
/// about a tenth of the services' CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `0.1.0 (git abc123def456)`.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SAFRA_GIT_REVISION"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "safra", version = VERSION, about = "Safra: the agribusiness-finance service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole mesh on this machine: PostgreSQL, migrations, every
    /// service and the gateway, until Ctrl-C or SIGTERM.
    Up,
    /// Run one service (accounts, marketplace, wallet, distribution,
    /// notifications) or the gateway.
    Serve {
        /// What to run.
        name: serve::ProcessName,
    },
    /// Make the development CA and certificates in $SAFRA_HOME/certs.
    Certs {
        #[command(subcommand)]
        action: certs::Action,
    },
    /// Rotate or list the accounts service's token-signing keys.
    Keys {
        #[command(subcommand)]
        action: keys::Action,
    },
    /// Print the contracts' OpenAPI document or Markdown API reference.
    Docs {
        #[command(subcommand)]
        action: docs::Action,
    },
    /// Apply, revert or list the migrations of the service databases and
    /// the event bus's.
    Migrate {
        #[command(subcommand)]
        action: migrate::Action,
        /// Only this service's database (default: every service and the bus).
        #[arg(long, global = true)]
        service: Option<safra::mesh::Service>,
        /// Only the event bus's database.
        #[arg(long, global = true)]
        bus: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Up => up::run().await,
        Command::Serve { name } => serve::run(name).await,
        Command::Certs { action } => certs::run(&action),
        Command::Keys { action } => keys::run(action).await,
        Command::Docs { action } => docs::run(action),
        Command::Migrate {
            action,
            service,
            bus,
        } => migrate::run(action, service, bus).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("safra: {error:#}");
            ExitCode::FAILURE
        }
    }
}
