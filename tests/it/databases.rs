//! The per-test database harness: clones are migrated, isolated from each
//! other, and gone once dropped.

use diesel_async::SimpleAsyncConnection;
use safra::db;
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
