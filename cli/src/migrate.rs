//! `safra migrate up|down|status [--service <name> | --bus]`: the migrations
//! of each service database and of the event bus's, as the Helm hook Jobs
//! run them once per release.
//!
//! The database of a service is `SAFRA_<SERVICE>_DATABASE_URL` when set,
//! else `DATABASE_URL`'s server with the database `<SAFRA_DB_PREFIX>_<name>`
//! (prefix `safra` by default). The bus's is `SAFRA_BUS_DATABASE_URL`, else
//! `<prefix>_events` on that server.

use anyhow::Context;
use clap::Subcommand;
use diesel_migrations::EmbeddedMigrations;
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

/// One database with migrations: a service's or the bus's.
struct Target {
    /// How output lines name it.
    name: String,
    /// The variable that gives its URL whole.
    own_variable: String,
    /// Its name on `DATABASE_URL`'s server otherwise.
    database: String,
    migrations: &'static EmbeddedMigrations,
}

impl Target {
    fn service(service: Service, prefix: &str) -> Self {
        Self {
            name: service.to_string(),
            own_variable: format!("SAFRA_{}_DATABASE_URL", service.env_name()),
            database: service.database_name(prefix),
            migrations: catalogue::migrations(service),
        }
    }

    fn bus(prefix: &str) -> Self {
        Self {
            name: "bus".to_owned(),
            own_variable: "SAFRA_BUS_DATABASE_URL".to_owned(),
            database: format!("{prefix}_events"),
            migrations: &safra::bus::MIGRATIONS,
        }
    }
}

/// Runs `action` on `only`, on the bus alone (`bus_only`), or on every
/// service database and the bus's.
#[allow(clippy::print_stdout, reason = "status is the command's output")]
pub async fn run(action: Action, only: Option<Service>, bus_only: bool) -> anyhow::Result<()> {
    let environment = Environment::load()?;
    let reader = Reader::new(&environment);
    let prefix = reader.string_or("SAFRA_DB_PREFIX", "safra")?;
    let targets: Vec<Target> = match (only, bus_only) {
        (Some(_), true) => anyhow::bail!("give --service or --bus, not both"),
        (Some(service), false) => vec![Target::service(service, &prefix)],
        (None, true) => vec![Target::bus(&prefix)],
        (None, false) => Service::ALL
            .iter()
            .map(|service| Target::service(*service, &prefix))
            .chain([Target::bus(&prefix)])
            .collect(),
    };
    for target in targets {
        let name = &target.name;
        let url = database_url(reader, &target)?;
        match action {
            Action::Up => {
                ensure_database(reader, &target).await?;
                let applied = db::migrate_up(&url, target.migrations)
                    .await
                    .with_context(|| name.clone())?;
                println!("{name}: {} migration(s) applied", applied.len());
            }
            Action::Down => match db::migrate_down_last(&url, target.migrations)
                .await
                .with_context(|| name.clone())?
            {
                Some(version) => println!("{name}: reverted {version}"),
                None => println!("{name}: nothing to revert"),
            },
            Action::Status => {
                for (version, applied) in db::migration_status(&url, target.migrations)
                    .await
                    .with_context(|| name.clone())?
                {
                    let state = if applied { "applied" } else { "pending" };
                    println!("{name}\t{version}\t{state}");
                }
            }
        }
    }
    Ok(())
}

/// The URL of `target`'s database.
fn database_url(reader: Reader<'_>, target: &Target) -> anyhow::Result<Secret> {
    if let Some(url) = reader.optional_secret(&target.own_variable)? {
        return Ok(url);
    }
    let server = reader.required_secret("DATABASE_URL")?;
    Ok(Secret::new(db::with_database(
        server.expose(),
        &target.database,
    )))
}

/// Creates `target`'s database on `DATABASE_URL`'s server when it is
/// derived from it (a database given whole is the operator's to create).
async fn ensure_database(reader: Reader<'_>, target: &Target) -> anyhow::Result<()> {
    if reader.optional(&target.own_variable)?.is_some() {
        return Ok(());
    }
    let server = reader.required_secret("DATABASE_URL")?;
    let mut conn = db::connect_once(server.expose())
        .await
        .context("DATABASE_URL")?;
    db::create_database_if_missing(&mut conn, &target.database).await?;
    Ok(())
}
