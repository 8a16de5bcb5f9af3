//! The pool's connections as PostgreSQL sees them: each statement is
//! prepared once per connection and reused (DSL queries and hand-written
//! SQL alike), a check-out runs nothing, turning prepared statements off
//! leaves none behind, and a connection given back mid-transaction is
//! counted as replaced.

use std::time::Duration;

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Integer, Text},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use safra::data::{db::Database, statement::Statement};
use safra_marketplace::store::{self, OfferingFilter};
use safra_test_support::TestDatabase;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct Query {
    #[diesel(sql_type = Text)]
    query: String,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// Statements prepared on `conn`'s session, and how many of them share
/// their text with another.
async fn prepared(conn: &mut diesel_async::AsyncPgConnection) -> (i64, i64) {
    let all: Vec<Count> = Statement::new("SELECT count(*) AS count FROM pg_prepared_statements")
        .load(conn)
        .await
        .expect("count prepared statements");
    let twice: Vec<Count> = Statement::new(
        "SELECT count(*) AS count FROM (SELECT statement FROM pg_prepared_statements \
         GROUP BY statement HAVING count(*) > 1) AS repeated",
    )
    .load(conn)
    .await
    .expect("count repeated statements");
    (all[0].count, twice[0].count)
}

/// A pool of one connection on a fresh marketplace database.
async fn one_connection(prepared_statements: bool) -> (TestDatabase, Database) {
    let db = TestDatabase::migrated("marketplace", &safra_marketplace::MIGRATIONS)
        .await
        .expect("database");
    let mut config = db.config();
    config.pool_size = 1;
    config.prepared_statements = prepared_statements;
    let database = Database::connect(&config).await.expect("pool");
    (db, database)
}

/// One DSL read of a store (a boxed query and the schedules of what it
/// found) and one hand-written read of the event log's shape.
async fn reads(conn: &mut diesel_async::AsyncPgConnection) {
    store::list_offerings(conn, &OfferingFilter::default(), None, 50)
        .await
        .expect("list offerings");
    let _: Vec<Count> = Statement::new(
        "SELECT count(*) AS count FROM outbox WHERE published_at IS NULL AND seq > $1",
    )
    .bind::<BigInt, _>(0_i64)
    .load(conn)
    .await
    .expect("a hand-written read");
}

#[tokio::test]
async fn a_read_run_twice_on_one_connection_is_prepared_once() {
    let (_db, database) = one_connection(true).await;
    let mut conn = database.connection().await.expect("connection");
    let before = prepared(&mut conn).await;
    reads(&mut conn).await;
    let after_first = prepared(&mut conn).await;
    reads(&mut conn).await;
    let after_second = prepared(&mut conn).await;
    assert!(
        after_first.0 > before.0,
        "the first run prepares its statements: {before:?} -> {after_first:?}"
    );
    assert_eq!(
        after_second, after_first,
        "the second run prepares nothing new"
    );
    assert_eq!(after_second.1, 0, "no statement is prepared twice");
}

#[tokio::test]
async fn with_prepared_statements_off_none_outlives_its_call() {
    let (_db, database) = one_connection(false).await;
    let mut conn = database.connection().await.expect("connection");
    reads(&mut conn).await;
    reads(&mut conn).await;
    // Only the statement counting them is there, while it runs.
    assert_eq!(prepared(&mut conn).await, (1, 0));
}

#[tokio::test]
async fn a_check_out_sends_nothing_to_the_server() {
    let (db, database) = one_connection(true).await;
    let pid = {
        let mut conn = database.connection().await.expect("connection");
        let pid: Vec<Pid> = Statement::new("SELECT pg_backend_pid() AS pid")
            .load(&mut conn)
            .await
            .expect("pid");
        pid[0].pid
    };
    // Check the one connection out and back in, several times.
    for _ in 0..3 {
        drop(database.connection().await.expect("connection"));
    }
    let mut observer = safra::data::db::connect_once(db.url().expose())
        .await
        .expect("observer");
    let last: Vec<Query> = Statement::new("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind::<Integer, _>(pid)
        .load(&mut observer)
        .await
        .expect("activity");
    assert_eq!(
        last[0].query, "SELECT pg_backend_pid() AS pid",
        "the last statement the connection ran is still ours"
    );
    assert_eq!(database.pool_statistics().replaced(), 0);
}

#[tokio::test]
async fn a_connection_given_back_mid_transaction_is_counted_as_replaced() {
    let (_db, database) = one_connection(true).await;
    {
        let mut conn = database.connection().await.expect("connection");
        let abandoned = tokio::time::timeout(
            Duration::from_millis(200),
            conn.transaction::<(), diesel::result::Error, _>(async |conn| {
                Statement::new("SELECT pg_sleep(5)").execute(conn).await?;
                Ok(())
            }),
        )
        .await;
        assert!(abandoned.is_err(), "the transaction was cut off");
    }
    // The broken connection is dropped; the next check-out opens another.
    let mut conn = database.connection().await.expect("a new connection");
    Statement::new("SELECT 1")
        .execute(&mut conn)
        .await
        .expect("the new connection works");
    drop(conn);
    let figures = database.pool_statistics();
    assert_eq!(figures.closed_broken, 1, "{figures:?}");
    assert_eq!(figures.opened, 2, "{figures:?}");
}
