//! `safra certs init|issue <name>`: the development CA and the leaf
//! certificates in `$SAFRA_HOME/certs` (Kubernetes uses cert-manager's).

use anyhow::Context;
use clap::Subcommand;
use safra::{
    config::{self, Environment, Reader},
    identity::certs::{CertDir, LEAF_VALIDITY},
};

/// What to make.
#[derive(Debug, Clone, Subcommand)]
pub enum Action {
    /// The CA (if missing) and a certificate for each service and the gateway
    /// (if missing).
    Init,
    /// A certificate for an outside caller, with the SPIFFE id
    /// spiffe://safra.local/svc/<name>, signed by the existing CA.
    Issue {
        /// The caller's name (lower-case letters, digits, '-').
        name: String,
    },
}

/// Makes what `action` asks for and says where it is.
#[allow(
    clippy::print_stdout,
    reason = "the paths made are the command's output"
)]
pub fn run(action: &Action) -> anyhow::Result<()> {
    let environment = Environment::load()?;
    let reader = Reader::new(&environment);
    let dir = CertDir::new(config::home(reader)?.join("certs"));
    match action {
        Action::Init => {
            let created = dir.init().context("safra certs init")?;
            if created.is_empty() {
                println!(
                    "certificates already present in {}",
                    dir.ca_cert()
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
            }
            for name in created {
                let path = if name == "ca" {
                    dir.ca_cert()
                } else {
                    dir.leaf_cert(&name)
                };
                println!("made {}", path.display());
            }
        }
        Action::Issue { name } => {
            if !dir.ca_cert().exists() {
                anyhow::bail!(
                    "no CA at {}: run `safra certs init` first",
                    dir.ca_cert().display()
                );
            }
            dir.issue(name, LEAF_VALIDITY)
                .context("safra certs issue")?;
            println!(
                "made {} and {}",
                dir.leaf_cert(name).display(),
                dir.leaf_key(name).display()
            );
        }
    }
    Ok(())
}
