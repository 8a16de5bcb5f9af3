//! `safra keys rotate|list`: the accounts service's signing keys. Rotation
//! adds a key that signs from now on; the previous one stays published
//! until every token it signed has expired.
//!
//! The database is `SAFRA_ACCOUNTS_DATABASE_URL`, else `DATABASE_URL`'s
//! server with `<SAFRA_DB_PREFIX>_accounts`; the key-encryption key is
//! `SAFRA_KEY_ENCRYPTION_KEY` (or `_FILE`), else the one `safra up` keeps in
//! `$SAFRA_HOME/secrets`.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use clap::Subcommand;
use safra::{
    config::{self, ConfigError, DatabaseConfig, Environment, Reader, Secret},
    data::db::{self, Database},
    mesh::Service,
};
use safra_accounts::{
    api::{Accounts, TokenSettings},
    domain::{Argon2id, HashingPool},
};

/// What to do with the keys.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Action {
    /// Add a new signing key; new tokens use it.
    Rotate,
    /// List the keys, newest first, with when they retire and leave the JWKS.
    List,
}

/// Runs `action`.
#[allow(clippy::print_stdout, reason = "the keys are the command's output")]
pub async fn run(action: Action) -> anyhow::Result<()> {
    let environment = Environment::load()?;
    let reader = Reader::new(&environment);
    let accounts = open(reader).await?;
    match action {
        Action::Rotate => {
            let kid = accounts
                .rotate_keys()
                .await
                .context("rotating the signing key")?;
            println!("signing with {kid}");
        }
        Action::List => {
            for key in accounts
                .signing_keys()
                .await
                .context("listing the signing keys")?
            {
                let show = |time: Option<chrono::DateTime<chrono::Utc>>| {
                    time.map_or_else(|| "-".to_owned(), |time| time.to_rfc3339())
                };
                println!(
                    "{}\tcreated {}\tretires {}\tunpublished {}",
                    key.kid,
                    key.create_time.to_rfc3339(),
                    show(key.retire_after),
                    show(key.not_after)
                );
            }
        }
    }
    Ok(())
}

/// The accounts service's store and keys, as the tools reach them.
pub async fn open(reader: Reader<'_>) -> anyhow::Result<Accounts> {
    let url = match reader.optional_secret("SAFRA_ACCOUNTS_DATABASE_URL")? {
        Some(url) => url,
        None => {
            let server = reader.required_secret("DATABASE_URL")?;
            let prefix = reader.string_or("SAFRA_DB_PREFIX", "safra")?;
            Secret::new(db::with_database(
                server.expose(),
                &Service::Accounts.database_name(&prefix),
            ))
        }
    };
    let key = match reader.optional_secret("SAFRA_KEY_ENCRYPTION_KEY")? {
        Some(key) => key.expose().to_owned(),
        None => {
            let path = config::home(reader)?.join("secrets/key-encryption.key");
            std::fs::read_to_string(&path).map_err(|error| ConfigError {
                variable: "SAFRA_KEY_ENCRYPTION_KEY".into(),
                problem: format!("is not set and {} cannot be read: {error}", path.display()),
            })?
        }
    };
    let keys = safra_accounts::key_encryption_key(&key).map_err(|problem| ConfigError {
        variable: "SAFRA_KEY_ENCRYPTION_KEY".into(),
        problem,
    })?;
    let database = Database::connect(&DatabaseConfig {
        url,
        pool_size: 2,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 10_000,
        prepared_statements: true,
    })
    .await
    .context("the accounts database")?;
    let hashing = HashingPool::new(Arc::new(Argon2id::new()?), 1)?;
    let tokens = TokenSettings {
        issuer: reader.string_or("SAFRA_JWT_ISSUER", safra::identity::auth::DEFAULT_ISSUER)?,
        access_lifetime: Duration::from_secs(reader.parse_or(
            "SAFRA_ACCESS_TOKEN_SECS",
            900_u64,
            "a whole number of seconds",
        )?),
        ..TokenSettings::default()
    };
    Ok(Accounts::new(database, hashing, keys, tokens).await?)
}
