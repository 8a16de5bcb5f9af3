//! Retention on a real PostgreSQL: the bus's event log is shed only below
//! every cursor that holds it (a retired subscriber's until it has been idle
//! long enough), handled ids and published outbox rows by age, and handled
//! totals come from counters kept as ids are recorded, not from counting
//! them; the jobs monitor shows a retired cursor as such.

use std::time::Duration;

use chrono::Utc;
use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use safra::{
    bus::{
        Bus,
        jobs::Jobs,
        postgres::PgBus,
        retention::{self, Pruned, RetentionSettings},
    },
    data::db::Database,
};
use safra_test_support::TestDatabase;

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn number(database: &TestDatabase, query: &str) -> i64 {
    let mut conn = safra::data::db::connect_once(database.url().expose())
        .await
        .expect("connect");
    let rows: Vec<Number> = diesel::sql_query(query).load(&mut conn).await.expect(query);
    rows.into_iter().next().map_or(-1, |row| row.n)
}

async fn run(database: &TestDatabase, sql: &str) {
    safra::data::db::connect_once(database.url().expose())
        .await
        .expect("connect")
        .batch_execute(sql)
        .await
        .expect(sql);
}

const SETTINGS: RetentionSettings = RetentionSettings {
    keep: Duration::from_secs(7 * 24 * 3600),
    idle_cursor: Duration::from_secs(3 * 24 * 3600),
    every: Duration::from_secs(600),
};

#[tokio::test]
async fn the_log_is_shed_below_every_holding_cursor_and_old_ids_and_rows_by_age() {
    let service = TestDatabase::migrated("notifications", &safra_notifications::MIGRATIONS)
        .await
        .expect("service database");
    let bus = TestDatabase::migrated("bus", &safra::bus::MIGRATIONS)
        .await
        .expect("bus database");
    // Positions 1-10 are ten days old, 11-15 fresh.
    run(
        &bus,
        "INSERT INTO event_log (event_id, event_type, aggregate_key, envelope, create_time) \
         SELECT gen_random_uuid(), 't', 'k', '', now() - CASE WHEN n <= 10 \
                THEN interval '10 days' ELSE interval '0' END \
         FROM generate_series(1, 15) AS n ORDER BY n;
         INSERT INTO subscriber_cursors (subscriber, position, update_time) VALUES
           ('notifications', 4, now() - interval '30 days'),
           ('marketplace', 12, now()),
           ('retired-one', 2, now() - interval '1 day');",
    )
    .await;
    // Handled ids and outbox rows, old and fresh; one old row unpublished.
    run(
        &service,
        "INSERT INTO processed_events (subscriber, event_id, processed_time)
           SELECT 'notifications', gen_random_uuid(), now() - interval '8 days'
           FROM generate_series(1, 3);
         INSERT INTO processed_events (subscriber, event_id)
           SELECT 'notifications', gen_random_uuid() FROM generate_series(1, 2);
         INSERT INTO outbox (aggregate_key, event_type, payload, create_time, published_at) VALUES
           ('k', 't', '', now() - interval '9 days', now() - interval '8 days'),
           ('k', 't', '', now(), now()),
           ('k', 't', '', now() - interval '9 days', NULL);",
    )
    .await;
    let service_pool = Database::connect(&service.config()).await.expect("pool");
    let bus_pool = Database::connect(&bus.config()).await.expect("pool");

    // The retired cursor moved a day ago: it still holds the log at 2.
    let pruned = retention::round(&service_pool, Some(&bus_pool), SETTINGS, Utc::now())
        .await
        .expect("a round");
    assert_eq!(
        pruned,
        Pruned {
            outbox: 1,
            processed_events: 3,
            event_log: 2,
        }
    );
    assert_eq!(
        number(&bus, "SELECT min(position) AS n FROM event_log").await,
        3
    );
    // Handled totals are kept apart from the ids retention removes.
    assert_eq!(
        number(
            &service,
            "SELECT handled AS n FROM subscriber_totals WHERE subscriber = 'notifications'"
        )
        .await,
        5
    );
    assert_eq!(
        number(
            &service,
            "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
        )
        .await,
        1,
        "an unpublished row is never removed"
    );

    // The jobs monitor shows the retired cursor, still holding the log.
    let jobs = Jobs::new(
        "notifications",
        service_pool.clone(),
        Some(Bus::Postgres(PgBus::new(bus_pool.clone()))),
        Vec::new(),
    )
    .with_idle_cursor(SETTINGS.idle_cursor);
    let listed = jobs.subscriptions().await.expect("listed");
    let retired = listed
        .iter()
        .find(|subscription| subscription.name == "retired-one")
        .expect("the retired cursor is listed");
    assert!(retired.retired && retired.holds_log, "{retired:?}");
    assert_eq!(retired.backlog, 13, "positions 3 to 15 are after it");

    // Idle past the bound, it lets go: the lowest holding cursor is the
    // lagging subscriber's at 4, which holds 5 and up however old.
    run(
        &bus,
        "UPDATE subscriber_cursors SET update_time = now() - interval '4 days' \
         WHERE subscriber = 'retired-one'",
    )
    .await;
    let pruned = retention::round(&service_pool, Some(&bus_pool), SETTINGS, Utc::now())
        .await
        .expect("a round");
    assert_eq!(pruned.event_log, 2);
    assert_eq!(
        number(&bus, "SELECT min(position) AS n FROM event_log").await,
        5
    );
    let listed = jobs.subscriptions().await.expect("listed");
    let retired = listed
        .iter()
        .find(|subscription| subscription.name == "retired-one")
        .expect("still listed");
    assert!(retired.retired && !retired.holds_log, "{retired:?}");

    // Nothing fresh goes, whatever the cursors say.
    run(&bus, "UPDATE subscriber_cursors SET position = 15").await;
    retention::round(&service_pool, Some(&bus_pool), SETTINGS, Utc::now())
        .await
        .expect("a round");
    assert_eq!(
        number(&bus, "SELECT count(*) AS n FROM event_log").await,
        5,
        "the five fresh entries stay"
    );
}

#[tokio::test]
async fn handled_totals_count_each_recorded_id_once_and_not_a_rolled_back_one() {
    let service = TestDatabase::migrated("notifications", &safra_notifications::MIGRATIONS)
        .await
        .expect("service database");
    run(
        &service,
        "INSERT INTO processed_events (subscriber, event_id) \
           SELECT 'a', gen_random_uuid() FROM generate_series(1, 3);
         INSERT INTO processed_events (subscriber, event_id) \
           SELECT 'a', event_id FROM processed_events ON CONFLICT DO NOTHING;
         INSERT INTO processed_events (subscriber, event_id) VALUES ('b', gen_random_uuid());",
    )
    .await;
    // A handling that fails rolls its ids back, and its count with them.
    run(
        &service,
        "BEGIN;
         INSERT INTO processed_events (subscriber, event_id) VALUES ('a', gen_random_uuid());
         ROLLBACK;",
    )
    .await;
    assert_eq!(
        number(
            &service,
            "SELECT handled AS n FROM subscriber_totals WHERE subscriber = 'a'"
        )
        .await,
        3
    );
    assert_eq!(
        number(
            &service,
            "SELECT handled AS n FROM subscriber_totals WHERE subscriber = 'b'"
        )
        .await,
        1
    );
}
