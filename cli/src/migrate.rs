//! `safra migrate up|down|status [--service <name>]`: the migrations of each
//! service database, as the Helm hook Job runs them once per release.
//!
//! The database of a service is `SAFRA_<SERVICE>_DATABASE_URL` when set,
//! else `DATABASE_URL`'s server with the database `<SAFRA_DB_PREFIX>_<name>`
//! (prefix `safra` by default).

use anyhow::Context;
use clap::Subcommand;
use safra::{
    config::{Environment, Reader, Secret},
    data::db,
    mesh::Service,
};

use crate::catalogue;

/// What to do with the migrations.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Action {
    /// Create the database if missing and apply every pending migration.
    Up,
    /// Revert the most recent migration.
    Down,
    /// List each migration and whether it is applied.
    Status,
}

/// Runs `action` on `only` or on every service.
#[allow(clippy::print_stdout, reason = "status is the command's output")]
pub async fn run(action: Action, only: Option<Service>) -> anyhow::Result<()> {
    let environment = Environment::load()?;
    let reader = Reader::new(&environment);
    let prefix = reader.string_or("SAFRA_DB_PREFIX", "safra")?;
    let services: Vec<Service> =
        only.map_or_else(|| Service::ALL.to_vec(), |service| vec![service]);
    for service in services {
        let url = database_url(reader, service, &prefix)?;
        let migrations = catalogue::migrations(service);
        match action {
            Action::Up => {
                ensure_database(reader, service, &prefix).await?;
                let applied = db::migrate_up(&url, migrations)
                    .await
                    .with_context(|| format!("{service}"))?;
                println!("{service}: {} migration(s) applied", applied.len());
            }
            Action::Down => match db::migrate_down_last(&url, migrations)
                .await
                .with_context(|| format!("{service}"))?
            {
                Some(version) => println!("{service}: reverted {version}"),
                None => println!("{service}: nothing to revert"),
            },
            Action::Status => {
                for (version, applied) in db::migration_status(&url, migrations)
                    .await
                    .with_context(|| format!("{service}"))?
                {
                    let state = if applied { "applied" } else { "pending" };
                    println!("{service}\t{version}\t{state}");
                }
            }
        }
    }
    Ok(())
}

/// The URL of `service`'s own database.
fn database_url(reader: Reader<'_>, service: Service, prefix: &str) -> anyhow::Result<Secret> {
    let own = format!("SAFRA_{}_DATABASE_URL", service.env_name());
    if let Some(url) = reader.optional_secret(&own)? {
        return Ok(url);
    }
    let server = reader.required_secret("DATABASE_URL")?;
    Ok(Secret::new(db::with_database(
        server.expose(),
        &service.database_name(prefix),
    )))
}

/// Creates the service database on `DATABASE_URL`'s server when it is
/// derived from it (a database given whole is the operator's to create).
async fn ensure_database(reader: Reader<'_>, service: Service, prefix: &str) -> anyhow::Result<()> {
    let own = format!("SAFRA_{}_DATABASE_URL", service.env_name());
    if reader.optional(&own)?.is_some() {
        return Ok(());
    }
    let server = reader.required_secret("DATABASE_URL")?;
    let mut conn = db::connect_once(server.expose())
        .await
        .context("DATABASE_URL")?;
    db::create_database_if_missing(&mut conn, &service.database_name(prefix)).await?;
    Ok(())
}
