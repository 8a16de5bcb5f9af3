//! Test helpers shared by every crate's tests: a fresh PostgreSQL database
//! per test, and a throw-away CA for servers over mutual TLS ([`TestPki`]).
//!
//! Each test gets its own database, cloned from a migrated template, so a test
//! costs milliseconds and sees no other test's rows. The template is built
//! once per migration set: its name carries a hash of the migration files,
//! and it is built under an advisory lock so parallel test processes (nextest
//! runs one per test) build it once. Databases left behind by killed runs are
//! swept when they are older than [`LEFTOVER_AGE`].
//!
//! The server is `DATABASE_URL` (the test command starts or reuses one and
//! exports it), else the local default `postgres://postgres@127.0.0.1:5432/postgres`.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use diesel_migrations::EmbeddedMigrations;
use safra::{
    config::{DatabaseConfig, Secret},
    data::db::{self, DbError},
};
use sha2::{Digest, Sha256};

mod pki;
pub use pki::TestPki;

/// Test databases older than this are leftovers of killed runs.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// Every per-test database name starts with this.
pub const TEST_DATABASE_PREFIX: &str = "safra_test_";

const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server tests run against.
#[must_use]
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned())
}

/// The repository's `migrations/` folder.
#[must_use]
pub fn migrations_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

/// A database that exists for one test and is dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A fresh database holding `service`'s schema at its latest migration,
    /// cloned from the template for the current migration files.
    ///
    /// # Errors
    /// The server is unreachable or a migration fails.
    pub async fn migrated(
        service: &str,
        migrations: &'static EmbeddedMigrations,
    ) -> Result<Self, DbError> {
        let server_url = server_url();
        let template = ensure_template(&server_url, service, migrations).await?;
        Self::create(server_url, Some(&template)).await
    }

    /// A fresh empty database (for tests of the migrations themselves).
    ///
    /// # Errors
    /// The server is unreachable.
    pub async fn empty() -> Result<Self, DbError> {
        Self::create(server_url(), None).await
    }

    async fn create(server_url: String, template: Option<&str>) -> Result<Self, DbError> {
        let mut conn = db::connect_once(&server_url).await?;
        sweep_leftovers(&mut conn).await?;
        let name = unique_prefix();
        let statement = match template {
            Some(template) => format!(
                "CREATE DATABASE {} TEMPLATE {}",
                db::quote_identifier(&name),
                db::quote_identifier(template)
            ),
            None => format!("CREATE DATABASE {}", db::quote_identifier(&name)),
        };
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, &statement).await?;
        let url = db::with_database(&server_url, &name);
        Ok(Self {
            server_url,
            name,
            url,
        })
    }

    /// The database's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL that connects to this database.
    #[must_use]
    pub fn url(&self) -> Secret {
        Secret::new(self.url.clone())
    }

    /// Pool settings for this database, as a service would read them.
    #[must_use]
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.url(),
            pool_size: 4,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 5_000,
            prepared_statements: true,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on from
        // within: do the async work on a thread with a runtime of its own.
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = db::connect_once(&server_url).await {
                    drop_database(&mut conn, &name).await.ok();
                }
            });
        });
        // A failed drop leaves a leftover for the sweep, never a failed test.
        dropper.join().ok();
    }
}

/// A fresh name prefix for databases a test creates itself (e.g. through
/// `safra up` with `SAFRA_DB_PREFIX`): swept like any per-test database if
/// the test dies before [`drop_databases_with_prefix`].
#[must_use]
pub fn unique_prefix() -> String {
    format!(
        "{TEST_DATABASE_PREFIX}{}_{}",
        unix_seconds(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Drops every database whose name starts with `prefix`.
///
/// # Errors
/// The server is unreachable.
pub async fn drop_databases_with_prefix(prefix: &str) -> Result<(), DbError> {
    let mut conn = db::connect_once(&server_url()).await?;
    for name in db::databases_with_prefix(&mut conn, prefix).await? {
        drop_database(&mut conn, &name).await?;
    }
    Ok(())
}

/// The template for the current migrations of `service`, built if missing.
async fn ensure_template(
    server_url: &str,
    service: &str,
    migrations: &'static EmbeddedMigrations,
) -> Result<String, DbError> {
    let hash = migrations_hash(&migrations_root().join(service)).map_err(|error| {
        DbError::Migration(format!("cannot read migrations/{service}: {error}"))
    })?;
    let template = format!("safra_tpl_{service}_{}", &hash[..16]);
    let mut conn = db::connect_once(server_url).await?;
    if db::database_exists(&mut conn, &template).await? {
        return Ok(template);
    }

    let lock_key = i64::from_str_radix(&hash[..15], 16).unwrap_or(0);
    advisory(&mut conn, "pg_advisory_lock", lock_key).await?;
    let built = build_template(&mut conn, server_url, &template, migrations).await;
    advisory(&mut conn, "pg_advisory_unlock", lock_key).await?;
    built.map(|()| template)
}

/// Builds the template under a work-in-progress name and renames it when
/// complete, so no test ever clones a half-migrated template.
async fn build_template(
    conn: &mut diesel_async::AsyncPgConnection,
    server_url: &str,
    template: &str,
    migrations: &'static EmbeddedMigrations,
) -> Result<(), DbError> {
    use diesel_async::SimpleAsyncConnection;

    if db::database_exists(conn, template).await? {
        return Ok(()); // another process built it while we waited for the lock
    }
    let work_in_progress = format!("{template}_wip");
    drop_database(conn, &work_in_progress).await?;
    conn.batch_execute(&format!(
        "CREATE DATABASE {}",
        db::quote_identifier(&work_in_progress)
    ))
    .await?;
    db::migrate_up(
        &Secret::new(db::with_database(server_url, &work_in_progress)),
        migrations,
    )
    .await?;
    conn.batch_execute(&format!(
        "ALTER DATABASE {} RENAME TO {}",
        db::quote_identifier(&work_in_progress),
        db::quote_identifier(template)
    ))
    .await?;
    Ok(())
}

async fn advisory(
    conn: &mut diesel_async::AsyncPgConnection,
    function: &str,
    key: i64,
) -> Result<(), DbError> {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(format!("SELECT {function}($1)"))
        .bind::<diesel::sql_types::BigInt, _>(key)
        .execute(conn)
        .await?;
    Ok(())
}

async fn drop_database(
    conn: &mut diesel_async::AsyncPgConnection,
    name: &str,
) -> Result<(), DbError> {
    diesel_async::SimpleAsyncConnection::batch_execute(
        conn,
        &format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            db::quote_identifier(name)
        ),
    )
    .await?;
    Ok(())
}

/// Drops per-test databases whose creation time (in their name) is older
/// than [`LEFTOVER_AGE`].
async fn sweep_leftovers(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), DbError> {
    let cutoff = unix_seconds().saturating_sub(LEFTOVER_AGE.as_secs());
    for name in db::databases_with_prefix(conn, TEST_DATABASE_PREFIX).await? {
        let created = name[TEST_DATABASE_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|seconds| seconds.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            drop_database(conn, &name).await.ok();
        }
    }
    Ok(())
}

/// A SHA-256 over every file of a migration folder (relative path and
/// contents, in sorted order), as hex.
///
/// # Errors
/// The folder cannot be read.
pub fn migrations_hash(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for relative in files {
        let contents = fs::read(dir.join(&relative))?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(&contents);
        hasher.update([0]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(root, &path, files)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            files.push(relative.to_path_buf());
        }
    }
    Ok(())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
