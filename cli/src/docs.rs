//! `safra docs openapi|reference`: the published descriptions of the
//! contracts, generated from the descriptor set built into this binary and
//! written to stdout (the book's build puts them beside its pages).

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;

/// Which description.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Action {
    /// The OpenAPI 3.1 document of the REST surface (as `/openapi.json`).
    Openapi,
    /// The API reference in Markdown: every public RPC and the messages it
    /// uses, with the contracts' comments and rules.
    Reference,
}

/// Writes the description `action` names to stdout.
pub fn run(action: Action) -> anyhow::Result<()> {
    let (openapi, reference) =
        safra_gateway::documents(crate::VERSION).context("the embedded contracts")?;
    let bytes = match action {
        Action::Openapi => openapi,
        Action::Reference => reference.into_bytes(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes).context("writing to stdout")?;
    stdout.write_all(b"\n").context("writing to stdout")?;
    Ok(())
}
