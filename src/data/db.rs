//! PostgreSQL access for services: a diesel-async connection pool with a
//! bounded acquire time, embedded diesel migrations run under an advisory
//! lock, a transaction helper and the few server-level operations
//! (`CREATE DATABASE`) that `safra up` and the tests need.

use std::time::Duration;

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Text},
};
use diesel::{migration::MigrationSource, pg::Pg};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, bb8},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::{
    config::{DatabaseConfig, Secret},
    data::postgres_tls::Connector,
};

/// A pool of connections to one service database.
pub type Pool = bb8::Pool<AsyncPgConnection>;

/// A connection to a service database, as handed to the store (by a
/// pool, or by the bus to an event handler inside its transaction).
pub type Connection = AsyncPgConnection;

/// A connection borrowed from a [`Pool`].
pub type PooledConnection<'a> = bb8::PooledConnection<'a, AsyncPgConnection>;

/// Serialises migrations of one database across replicas and tools; the
/// value is arbitrary but fixed ("SAFRA" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0053_4146_5241;

/// What can go wrong reaching or changing a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Every pooled connection stayed busy for the whole acquire timeout.
    #[error("no database connection became free within {0:?}")]
    PoolTimeout(Duration),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// Applying or reverting a migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl DbError {
    /// Whether PostgreSQL cancelled the statement for running past
    /// `statement_timeout`.
    #[must_use]
    pub fn is_statement_timeout(&self) -> bool {
        matches!(self, DbError::Query(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("statement timeout"))
    }
}

#[cfg(feature = "server")]
impl From<DbError> for tonic::Status {
    /// An overloaded or unreachable database is UNAVAILABLE (retry later), a
    /// statement past its timeout DEADLINE_EXCEEDED; anything else is an
    /// internal error whose cause is logged, not sent.
    fn from(error: DbError) -> Self {
        use crate::{contract::status, r#type::v1::ErrorReason};
        match &error {
            DbError::PoolTimeout(_) | DbError::Connect(_) => status::with_reason(
                tonic::Code::Unavailable,
                ErrorReason::Unavailable,
                "the database is not available right now",
                Vec::new(),
            ),
            _ if error.is_statement_timeout() => status::with_reason(
                tonic::Code::DeadlineExceeded,
                ErrorReason::DeadlineExceeded,
                "the database did not answer in time",
                Vec::new(),
            ),
            _ => status::internal(&error),
        }
    }
}

/// Prepares each new pooled connection: its `statement_timeout`, and
/// whether it keeps prepared statements.
#[derive(Debug)]
struct NewConnection {
    statement_timeout_ms: u64,
    prepared_statements: bool,
}

impl ::bb8::CustomizeConnection<AsyncPgConnection, diesel_async::pooled_connection::PoolError>
    for NewConnection
{
    fn on_acquire<'a>(
        &'a self,
        connection: &'a mut AsyncPgConnection,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<(), diesel_async::pooled_connection::PoolError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            if !self.prepared_statements {
                connection
                    .set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
            }
            connection
                .batch_execute(&format!(
                    "SET statement_timeout = {}",
                    self.statement_timeout_ms
                ))
                .await
                .map_err(diesel_async::pooled_connection::PoolError::QueryError)
        })
    }
}

/// A service's database: its pool and how long a call may wait for a
/// connection. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Database {
    pool: Pool,
    acquire_timeout: Duration,
    url: Secret,
}

impl Database {
    /// Builds the pool for `config` and checks that the database answers.
    ///
    /// # Errors
    /// [`DbError::Connect`] when the server is unreachable or refuses us.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        // One direct connection first: the pool would retry a refused
        // connection until its timeout and report only "timed out".
        drop(connect_once(config.url.expose()).await?);
        // Every pooled connection is made as `connect_once` makes one (TLS
        // as the URL's sslmode asks).
        // The URL's TLS settings (and its CA file) are read once, here.
        let connector = Connector::from_url(config.url.expose())
            .map_err(|error| DbError::Connect(error.to_string()))?;
        let mut setup = ManagerConfig::<AsyncPgConnection>::default();
        setup.custom_setup = Box::new(move |_| Box::pin(establish(connector.clone())));
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            config.url.expose(),
            setup,
        );
        let acquire_timeout = Duration::from_millis(config.acquire_timeout_ms);
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(acquire_timeout)
            // No test query on check-out: that is a round trip before every
            // use. A connection that broke is dropped when it comes back
            // (closed socket, or a transaction left open or failed), and a
            // call that meets a dead one fails as UNAVAILABLE; callers retry.
            .test_on_check_out(false)
            .connection_customizer(Box::new(NewConnection {
                statement_timeout_ms: config.statement_timeout_ms,
                prepared_statements: config.prepared_statements,
            }))
            .build(manager)
            .await
            .map_err(|error| DbError::Connect(error_chain(&error)))?;
        let database = Self {
            pool,
            acquire_timeout,
            url: config.url.clone(),
        };
        database.ping().await?;
        Ok(database)
    }

    /// Checks that a connection can be had and answers a trivial query.
    ///
    /// # Errors
    /// See [`Database::connection`], or [`DbError::Query`].
    pub async fn ping(&self) -> Result<(), DbError> {
        self.connection().await?.batch_execute("SELECT 1").await?;
        Ok(())
    }

    /// Borrows a connection, failing after the acquire timeout instead of
    /// waiting forever.
    ///
    /// # Errors
    /// [`DbError::PoolTimeout`] or [`DbError::Connect`].
    pub async fn connection(&self) -> Result<PooledConnection<'_>, DbError> {
        self.pool.get().await.map_err(|error| match error {
            ::bb8::RunError::TimedOut => DbError::PoolTimeout(self.acquire_timeout),
            ::bb8::RunError::User(cause) => DbError::Connect(error_chain(&cause)),
        })
    }

    /// The pool's counters since it was built: connections opened and
    /// closed, and how often a call waited for one.
    #[must_use]
    pub fn pool_statistics(&self) -> PoolStatistics {
        let state = self.pool.state();
        let counted = state.statistics;
        PoolStatistics {
            open: state.connections,
            idle: state.idle_connections,
            opened: counted.connections_created,
            closed_broken: counted.connections_closed_broken,
            closed_invalid: counted.connections_closed_invalid,
            closed_expired: counted.connections_closed_max_lifetime
                + counted.connections_closed_idle_timeout,
            waited: counted.get_waited,
            timed_out: counted.get_timed_out,
        }
    }

    /// Opens a connection of its own, outside the pool, for work that holds
    /// one for long (LISTEN).
    ///
    /// # Errors
    /// [`DbError::Connect`].
    pub async fn dedicated_connection(&self) -> Result<AsyncPgConnection, DbError> {
        connect_once(self.url.expose()).await
    }

    /// Runs `work` in one transaction on a pooled connection: committed when
    /// it returns `Ok`, rolled back when it returns `Err`.
    ///
    /// ```ignore
    /// database.transaction(|conn| Box::pin(async move { insert(conn).await })).await
    /// ```
    ///
    /// # Errors
    /// Whatever `work` returns, or the pool's errors converted into `E`.
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'r> FnOnce(&'r mut AsyncPgConnection) -> TransactionFuture<'r, T, E> + Send,
        E: From<diesel::result::Error> + From<DbError> + Send,
        T: Send,
    {
        let mut conn = self.connection().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        conn.transaction(async move |conn| work(conn).await).await
    }
}

/// What a pool has done since it was built (see
/// [`Database::pool_statistics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatistics {
    /// Connections open now.
    pub open: u32,
    /// Of those, idle now.
    pub idle: u32,
    /// Connections opened in all (the first ones included).
    pub opened: u64,
    /// Closed because they came back broken: the socket closed, or a
    /// transaction left open or failed (a call dropped half-way).
    pub closed_broken: u64,
    /// Closed because a check found them dead.
    pub closed_invalid: u64,
    /// Closed because they reached their idle time or lifetime.
    pub closed_expired: u64,
    /// Check-outs that had to wait for a free connection.
    pub waited: u64,
    /// Check-outs that gave up waiting.
    pub timed_out: u64,
}

impl PoolStatistics {
    /// Connections closed for any reason other than age: each one was
    /// replaced by a new server process with a cold statement cache.
    #[must_use]
    pub fn replaced(&self) -> u64 {
        self.closed_broken + self.closed_invalid
    }
}

/// The figures of a process's pools as Prometheus metrics, read at each
/// scrape: `safra_db_connections_opened_total`,
/// `safra_db_connections_closed_total{reason}` (broken, invalid,
/// expired), `safra_db_pool_connections`, `safra_db_pool_idle_connections`,
/// `safra_db_pool_waits_total` and `safra_db_pool_timeouts_total`, each
/// labelled with the pool's name (`service`, `bus`).
#[cfg(feature = "server")]
#[derive(Debug)]
pub struct PoolMetrics(pub Vec<(&'static str, Database)>);

/// A metric's name, help and how to read it off a pool's figures.
#[cfg(feature = "server")]
type PoolFigure<N> = (&'static str, &'static str, fn(&PoolStatistics) -> N);

#[cfg(feature = "server")]
impl prometheus_client::collector::Collector for PoolMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::{
            encoding::EncodeMetric,
            metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
        };
        let figures: Vec<(&str, PoolStatistics)> = self
            .0
            .iter()
            .map(|(name, database)| (*name, database.pool_statistics()))
            .collect();
        let counters: [PoolFigure<u64>; 3] = [
            (
                "safra_db_connections_opened",
                "Connections the pool opened, the first ones included.",
                |figures| figures.opened,
            ),
            (
                "safra_db_pool_waits",
                "Check-outs that waited for a free connection.",
                |figures| figures.waited,
            ),
            (
                "safra_db_pool_timeouts",
                "Check-outs that gave up waiting.",
                |figures| figures.timed_out,
            ),
        ];
        for (name, help, read) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (pool, figures) in &figures {
                ConstCounter::new(read(figures))
                    .encode(metric.encode_family(&[("pool", *pool)])?)?;
            }
        }
        let mut closed = encoder.encode_descriptor(
            "safra_db_connections_closed",
            "Connections the pool closed, by reason: broken (came back with a transaction open or failed, or its socket closed: replaced by a new one), invalid, expired (idle time or lifetime).",
            None,
            MetricType::Counter,
        )?;
        for (pool, figures) in &figures {
            for (reason, value) in [
                ("broken", figures.closed_broken),
                ("invalid", figures.closed_invalid),
                ("expired", figures.closed_expired),
            ] {
                ConstCounter::new(value)
                    .encode(closed.encode_family(&[("pool", *pool), ("reason", reason)])?)?;
            }
        }
        let gauges: [PoolFigure<u32>; 2] = [
            (
                "safra_db_pool_connections",
                "Connections open now.",
                |figures| figures.open,
            ),
            (
                "safra_db_pool_idle_connections",
                "Connections open and idle now.",
                |figures| figures.idle,
            ),
        ];
        for (name, help, read) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (pool, figures) in &figures {
                ConstGauge::new(i64::from(read(figures)))
                    .encode(metric.encode_family(&[("pool", *pool)])?)?;
            }
        }
        Ok(())
    }
}

/// The future a [`Database::transaction`] body returns.
pub type TransactionFuture<'r, T, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 'r>>;

/// Applies every pending migration of `migrations` to the database at `url`,
/// holding an advisory lock so that concurrent runs apply each one once.
/// Returns the versions applied.
///
/// # Errors
/// [`DbError::Connect`] or [`DbError::Migration`].
pub async fn migrate_up(
    url: &Secret,
    migrations: &'static EmbeddedMigrations,
) -> Result<Vec<String>, DbError> {
    with_migration_lock(url, move |conn| {
        conn.run_pending_migrations(StaticMigrations(migrations))
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|error| DbError::Migration(error.to_string()))
    })
    .await
}

/// Reverts the most recent applied migration of `migrations`, if any.
/// Returns its version.
///
/// # Errors
/// [`DbError::Connect`] or [`DbError::Migration`].
pub async fn migrate_down_last(
    url: &Secret,
    migrations: &'static EmbeddedMigrations,
) -> Result<Option<String>, DbError> {
    with_migration_lock(url, move |conn| {
        let applied = conn
            .applied_migrations()
            .map_err(|error| DbError::Migration(error.to_string()))?;
        if applied.is_empty() {
            return Ok(None);
        }
        conn.revert_last_migration(StaticMigrations(migrations))
            .map(|version| Some(version.to_string()))
            .map_err(|error| DbError::Migration(error.to_string()))
    })
    .await
}

/// Reverts every applied migration of `migrations`, newest first. Returns
/// the versions reverted.
///
/// # Errors
/// [`DbError::Connect`] or [`DbError::Migration`].
pub async fn migrate_down_all(
    url: &Secret,
    migrations: &'static EmbeddedMigrations,
) -> Result<Vec<String>, DbError> {
    with_migration_lock(url, move |conn| {
        conn.revert_all_migrations(StaticMigrations(migrations))
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|error| DbError::Migration(error.to_string()))
    })
    .await
}

/// Each migration of `migrations` with whether it is applied, oldest first.
///
/// # Errors
/// [`DbError::Connect`] or [`DbError::Migration`].
pub async fn migration_status(
    url: &Secret,
    migrations: &'static EmbeddedMigrations,
) -> Result<Vec<(String, bool)>, DbError> {
    with_migration_lock(url, move |conn| {
        let applied = conn
            .applied_migrations()
            .map_err(|error| DbError::Migration(error.to_string()))?;
        let pending = conn
            .pending_migrations(StaticMigrations(migrations))
            .map_err(|error| DbError::Migration(error.to_string()))?;
        let mut status: Vec<(String, bool)> = applied
            .iter()
            .map(|version| (version.to_string(), true))
            .chain(
                pending
                    .iter()
                    .map(|migration| (migration.name().version().to_string(), false)),
            )
            .collect();
        status.sort();
        Ok(status)
    })
    .await
}

type SyncPgConnection = AsyncConnectionWrapper<AsyncPgConnection>;

/// Lends a service's `static` embedded migrations to diesel's harness, which
/// wants an owned source.
struct StaticMigrations(&'static EmbeddedMigrations);

impl MigrationSource<Pg> for StaticMigrations {
    fn migrations(
        &self,
    ) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<Pg>>>> {
        MigrationSource::<Pg>::migrations(self.0)
    }
}

/// diesel's migration harness is synchronous: run it on a blocking thread,
/// through the async connection wrapper, under the migration advisory lock.
async fn with_migration_lock<T, F>(url: &Secret, work: F) -> Result<T, DbError>
where
    F: FnOnce(&mut SyncPgConnection) -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    // Connected here (TLS included), then driven synchronously.
    let conn = connect_once(url.expose()).await?;
    tokio::task::spawn_blocking(move || {
        let mut conn = SyncPgConnection::from(conn);
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK_KEY),
            &mut conn,
        )?;
        let outcome = work(&mut conn);
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(MIGRATION_LOCK_KEY),
            &mut conn,
        )?;
        outcome
    })
    .await
    .map_err(|error| DbError::Migration(format!("migration task failed: {error}")))?
}

/// Opens one connection outside any pool (server-level work, checks).
///
/// # Errors
/// [`DbError::Connect`].
pub async fn connect_once(url: &str) -> Result<AsyncPgConnection, DbError> {
    let connector =
        Connector::from_url(url).map_err(|error| DbError::Connect(error.to_string()))?;
    establish(connector).await.map_err(|error| {
        DbError::Connect(format!("{} ({})", server_address(url), error_chain(&error)))
    })
}

/// One connection as `connector` says: over TLS when the URL's `sslmode`
/// asks (see [`crate::data::postgres_tls`]), else as diesel-async connects.
async fn establish(connector: Connector) -> diesel::ConnectionResult<AsyncPgConnection> {
    let Some(tls) = connector.make_tls() else {
        return AsyncPgConnection::establish(connector.url()).await;
    };
    let (client, connection) = tokio_postgres::connect(connector.url(), tls)
        .await
        .map_err(|error| diesel::ConnectionError::BadConnection(error_chain(&error)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// `host:port` of a PostgreSQL URL, without credentials, for error lines.
#[must_use]
pub fn server_address(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.contains(':') || host.is_empty() {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// An error and its causes on one line (`a: b: c`): driver errors keep the
/// useful part ("Connection refused") in their sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[derive(QueryableByName)]
struct DatabaseName {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// Whether a database named `name` exists on the server `conn` is on.
///
/// # Errors
/// [`DbError::Query`].
pub async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, DbError> {
    let found: Vec<DatabaseName> =
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .load(conn)
            .await?;
    Ok(!found.is_empty())
}

/// Names of the databases whose name starts with `prefix`.
///
/// # Errors
/// [`DbError::Query`].
pub async fn databases_with_prefix(
    conn: &mut AsyncPgConnection,
    prefix: &str,
) -> Result<Vec<String>, DbError> {
    let found: Vec<DatabaseName> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
    )
    .bind::<Text, _>(prefix)
    .load(conn)
    .await?;
    Ok(found.into_iter().map(|row| row.datname).collect())
}

/// Creates the database `name` unless it exists. Two concurrent callers may
/// race; the loser's "already exists" is treated as success.
///
/// # Errors
/// [`DbError::Query`] for any other failure.
pub async fn create_database_if_missing(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> Result<(), DbError> {
    if database_exists(conn, name).await? {
        return Ok(());
    }
    match conn
        .batch_execute(&format!("CREATE DATABASE {}", quote_identifier(name)))
        .await
    {
        Ok(()) => Ok(()),
        Err(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("already exists") =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Quotes an SQL identifier (database names cannot be bound parameters).
#[must_use]
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `url` with its database name replaced by `database`, keeping user, host,
/// port and query parameters (`postgres://u@h:5432/old?x=y` ->
/// `postgres://u@h:5432/<database>?x=y`).
#[must_use]
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// Rows strictly after `after` in the order every list pages in
/// (`create_time` desc, `id` desc): older, or as old with a smaller id.
/// `time` and `id` are the table's `create_time` and `id` columns.
pub fn older_than<T, I>(time: T, id: I, after: crate::data::paging::Keyset) -> OlderThan<T, I>
where
    T: diesel::ExpressionMethods
        + diesel::Expression<SqlType = diesel::sql_types::Timestamptz>
        + Copy,
    I: diesel::ExpressionMethods + diesel::Expression<SqlType = diesel::sql_types::Uuid>,
{
    use diesel::BoolExpressionMethods;
    time.lt(after.time)
        .or(time.eq(after.time).and(id.lt(after.id)))
}

/// The expression [`older_than`] makes.
pub type OlderThan<T, I> = diesel::dsl::Or<
    diesel::dsl::Lt<T, chrono::DateTime<chrono::Utc>>,
    diesel::dsl::And<
        diesel::dsl::Eq<T, chrono::DateTime<chrono::Utc>>,
        diesel::dsl::Lt<I, uuid::Uuid>,
    >,
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_database_name() {
        assert_eq!(
            with_database(
                "postgres://u:p@db:5432/postgres?sslmode=disable",
                "safra_wallet"
            ),
            "postgres://u:p@db:5432/safra_wallet?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://127.0.0.1:5432", "safra_accounts"),
            "postgres://127.0.0.1:5432/safra_accounts"
        );
        assert_eq!(with_database("postgresql://h/x", "y"), "postgresql://h/y");
    }

    #[test]
    fn server_address_hides_credentials() {
        assert_eq!(
            server_address("postgres://u:secret@db:6543/x?a=b"),
            "db:6543"
        );
        assert_eq!(server_address("postgres://127.0.0.1/x"), "127.0.0.1:5432");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("safra_a"), "\"safra_a\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
    }
}
