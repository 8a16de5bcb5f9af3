//! The per-test database harness: clones are migrated, isolated from each
//! other, and gone once dropped.

use diesel_async::SimpleAsyncConnection;
use safra::data::db;
use safra_test_support::TestDatabase;

#[tokio::test]
async fn each_test_database_is_a_migrated_clone_of_its_own() {
    let first = TestDatabase::migrated("notifications", &safra_notifications::MIGRATIONS)
        .await
        .expect("first clone");
    let second = TestDatabase::migrated("notifications", &safra_notifications::MIGRATIONS)
        .await
        .expect("second clone");
    assert_ne!(first.name(), second.name());

    let status = db::migration_status(&first.url(), &safra_notifications::MIGRATIONS)
        .await
        .expect("status");
    assert!(!status.is_empty() && status.iter().all(|(_, applied)| *applied));

    let mut conn = db::connect_once(first.url().expose())
        .await
        .expect("connect");
    conn.batch_execute(
        "INSERT INTO notifications (id, user_id, kind, title, body) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'test', 'title', 'body')",
    )
    .await
    .expect("insert into the first clone");
    assert_eq!(count_notifications(first.url().expose()).await, 1);
    assert_eq!(
        count_notifications(second.url().expose()).await,
        0,
        "clones are isolated"
    );
}

#[tokio::test]
async fn a_dropped_test_database_is_gone() {
    let server = safra_test_support::server_url();
    let name = {
        let database = TestDatabase::empty().await.expect("an empty database");
        database.name().to_owned()
    };
    let mut conn = db::connect_once(&server)
        .await
        .expect("connect to the server");
    assert!(!db::database_exists(&mut conn, &name).await.expect("query"));
}

async fn count_notifications(url: &str) -> i64 {
    use diesel::{QueryableByName, sql_types::BigInt};
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    let mut conn = db::connect_once(url).await.expect("connect");
    let rows: Vec<Count> = diesel::sql_query("SELECT count(*) AS count FROM notifications")
        .load(&mut conn)
        .await
        .expect("count");
    rows.into_iter().next().map_or(0, |row| row.count)
}

#[tokio::test]
async fn a_busy_pool_and_a_stuck_statement_fail_fast_with_the_right_status() {
    use safra::data::db::Database;

    let database = TestDatabase::empty().await.expect("a database");
    let mut config = database.config();
    config.pool_size = 1;
    config.acquire_timeout_ms = 200;
    config.statement_timeout_ms = 200;
    let pool = Database::connect(&config).await.expect("pool");

    let mut held = pool.connection().await.expect("the only connection");
    let Err(busy) = pool.connection().await else {
        panic!("no connection should be free");
    };
    assert_eq!(tonic::Status::from(busy).code(), tonic::Code::Unavailable);

    let stuck = held
        .batch_execute("SELECT pg_sleep(5)")
        .await
        .expect_err("cancelled");
    let stuck = safra::data::db::DbError::from(stuck);
    assert!(stuck.is_statement_timeout(), "{stuck}");
    assert_eq!(
        tonic::Status::from(stuck).code(),
        tonic::Code::DeadlineExceeded
    );
}
