//! The PostgreSQL transport's conformance: a producer's outbox relayed to
//! the bus database and handled by a subscriber in another service's
//! database, on a real PostgreSQL — an event committed is delivered even
//! when the relay died after publishing, a redelivered event is applied
//! once, a subscriber killed mid-batch loses nothing, order per aggregate
//! holds with two relays at once, and a poison event is parked without
//! blocking the others.

use std::{sync::Arc, time::Duration};

use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use prost::Message;
use safra::{
    bus::{
        postgres::{Outgoing, PgBus},
        relay::relay_once,
        subscriber::{Handler, HandlerError, HandlerFuture, Retries, Round, Subscriber},
    },
    data::{db::Database, outbox::OutboxEvent},
    events::v1::{Envelope, PaymentConfirmed},
};
use safra_test_support::TestDatabase;

struct Bus {
    producer: TestDatabase,
    consumer: TestDatabase,
    bus_db: TestDatabase,
    producer_pool: Database,
    consumer_pool: Database,
    bus: PgBus,
}

async fn spawn_bus() -> Bus {
    let producer = TestDatabase::migrated("wallet", &safra_wallet::MIGRATIONS)
        .await
        .expect("producer database");
    let consumer = TestDatabase::migrated("notifications", &safra_notifications::MIGRATIONS)
        .await
        .expect("consumer database");
    let bus_db = TestDatabase::migrated("bus", &safra::bus::MIGRATIONS)
        .await
        .expect("bus database");
    let mut conn = safra::data::db::connect_once(consumer.url().expose())
        .await
        .expect("connect");
    conn.batch_execute(
        "CREATE TABLE effects (event_id uuid PRIMARY KEY, aggregate_key text NOT NULL, \
         n integer NOT NULL, handled bigserial)",
    )
    .await
    .expect("an effects table");
    Bus {
        producer_pool: Database::connect(&producer.config()).await.expect("pool"),
        consumer_pool: Database::connect(&consumer.config()).await.expect("pool"),
        bus: PgBus::new(Database::connect(&bus_db.config()).await.expect("pool")),
        producer,
        consumer,
        bus_db,
    }
}

/// Writes events `numbers` of `aggregate` to the producer's outbox, one
/// transaction each, and returns them as they would be published.
async fn emit(bus: &Bus, aggregate: &str, numbers: impl IntoIterator<Item = i32>) -> Vec<Outgoing> {
    let mut conn = bus.producer_pool.connection().await.expect("connection");
    let mut written = Vec::new();
    for n in numbers {
        let event = OutboxEvent::new(
            "wallet",
            aggregate,
            &PaymentConfirmed {
                installment_number: n,
                offering_id: aggregate.to_owned(),
                ..PaymentConfirmed::default()
            },
        );
        event.write(&mut conn).await.expect("outbox row");
        let envelope = event.envelope();
        written.push(Outgoing {
            event_id: envelope.id.parse().expect("uuid"),
            event_type: envelope.r#type.clone(),
            aggregate_key: envelope.aggregate_key.clone(),
            envelope: envelope.encode_to_vec(),
        });
    }
    written
}

/// Records each PaymentConfirmed; fails for `poison`, waits forever on
/// `stall`.
struct Record {
    poison: Option<i32>,
    stall: Option<i32>,
}

impl Handler for Record {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payment = envelope
                .payload
                .as_ref()
                .and_then(|any| PaymentConfirmed::decode(any.value.as_slice()).ok())
                .ok_or_else(|| HandlerError("not a PaymentConfirmed".into()))?;
            if Some(payment.installment_number) == self.poison {
                return Err(HandlerError(format!(
                    "installment {} cannot be handled",
                    payment.installment_number
                )));
            }
            if Some(payment.installment_number) == self.stall {
                std::future::pending::<()>().await;
            }
            diesel::sql_query(
                "INSERT INTO effects (event_id, aggregate_key, n) VALUES ($1::uuid, $2, $3)",
            )
            .bind::<diesel::sql_types::Text, _>(&envelope.id)
            .bind::<diesel::sql_types::Text, _>(&envelope.aggregate_key)
            .bind::<diesel::sql_types::Integer, _>(payment.installment_number)
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

fn subscriber(bus: &Bus, handler: Record) -> Subscriber {
    Subscriber::new(
        "test-subscriber",
        ["safra.events.v1.PaymentConfirmed"],
        Arc::new(handler),
        bus.consumer_pool.clone(),
        Retries {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
    )
}

async fn bus_conn(bus: &Bus) -> AsyncPgConnection {
    safra::data::db::connect_once(bus.bus_db.url().expose())
        .await
        .expect("connect")
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(database: &TestDatabase, query: &str) -> i64 {
    let mut conn = safra::data::db::connect_once(database.url().expose())
        .await
        .expect("connect");
    let rows: Vec<Count> = diesel::sql_query(query).load(&mut conn).await.expect(query);
    rows.into_iter().next().map_or(-1, |row| row.n)
}

/// Rounds until one claims the cursor (a killed holder's lock goes when
/// its connection does).
async fn claimed_round(subscriber: &Subscriber, bus: &Bus) -> Round {
    for _ in 0..100 {
        let round = subscriber
            .round(&mut bus_conn(bus).await, 100)
            .await
            .expect("a round");
        if round.claimed {
            return round;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cursor was never free");
}

#[tokio::test]
async fn an_event_committed_is_delivered_once_even_if_the_relay_died_after_publishing() {
    let bus = spawn_bus().await;
    let written = emit(&bus, "offering:a", 1..=5).await;
    // A relay published the first three, then died before marking them.
    bus.bus.append(&written[..3]).await.expect("published");
    assert_eq!(
        relay_once(&bus.producer_pool, &bus.bus, 100)
            .await
            .expect("relayed"),
        5,
        "the restarted relay publishes every unmarked row"
    );
    assert_eq!(
        count(&bus.bus_db, "SELECT count(*) AS n FROM event_log").await,
        5
    );
    assert_eq!(
        count(
            &bus.producer,
            "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );
    let subscriber = subscriber(
        &bus,
        Record {
            poison: None,
            stall: None,
        },
    );
    let round = claimed_round(&subscriber, &bus).await;
    assert_eq!((round.handled, round.duplicates), (5, 0));
    assert_eq!(
        count(&bus.consumer, "SELECT count(*) AS n FROM effects").await,
        5
    );

    // Delivered again (the cursor rewound): applied once.
    let mut conn = bus_conn(&bus).await;
    conn.batch_execute("UPDATE subscriber_cursors SET position = 0")
        .await
        .expect("rewind");
    let again = claimed_round(&subscriber, &bus).await;
    assert_eq!((again.handled, again.duplicates), (0, 5));
    assert_eq!(
        count(&bus.consumer, "SELECT count(*) AS n FROM effects").await,
        5
    );
}

#[tokio::test]
async fn a_subscriber_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let bus = spawn_bus().await;
    emit(&bus, "offering:k", 1..=5).await;
    relay_once(&bus.producer_pool, &bus.bus, 100)
        .await
        .expect("relayed");
    let stalling = subscriber(
        &bus,
        Record {
            poison: None,
            stall: Some(3),
        },
    );
    let url = bus.bus_db.url();
    let task = tokio::spawn(async move {
        let mut conn = safra::data::db::connect_once(url.expose())
            .await
            .expect("connect");
        stalling.round(&mut conn, 100).await
    });
    for _ in 0..200 {
        if count(&bus.consumer, "SELECT count(*) AS n FROM effects").await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        count(&bus.consumer, "SELECT count(*) AS n FROM effects").await,
        2
    );
    task.abort();
    assert!(task.await.is_err(), "killed mid-batch");

    let healthy = subscriber(
        &bus,
        Record {
            poison: None,
            stall: None,
        },
    );
    let round = claimed_round(&healthy, &bus).await;
    assert_eq!((round.handled, round.duplicates), (3, 2), "{round:?}");
    assert_eq!(
        count(&bus.consumer, "SELECT count(DISTINCT n) AS n FROM effects").await,
        5
    );
    assert_eq!(
        count(&bus.consumer, "SELECT count(*) AS n FROM effects").await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_per_aggregate_holds_with_two_relays_at_once() {
    let bus = Arc::new(spawn_bus().await);
    for n in 1..=20 {
        for aggregate in ["offering:x", "offering:y", "offering:z"] {
            emit(&bus, aggregate, [n]).await;
        }
    }
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let moved = relay_once(&bus.producer_pool, &bus.bus, 7)
                        .await
                        .expect("relayed");
                    let left = count(
                        &bus.producer,
                        "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
                    )
                    .await;
                    if moved == 0 && left == 0 {
                        return;
                    }
                }
            })
        })
        .collect();
    for relay in relays {
        relay.await.expect("relay task");
    }
    assert_eq!(
        count(&bus.bus_db, "SELECT count(*) AS n FROM event_log").await,
        60
    );
    let subscriber = subscriber(
        &bus,
        Record {
            poison: None,
            stall: None,
        },
    );
    assert_eq!(claimed_round(&subscriber, &bus).await.handled, 60);
    // Within each aggregate, handled in the order the events were written.
    let out_of_order = count(
        &bus.consumer,
        "SELECT count(*) AS n FROM (SELECT n, lag(n) OVER (PARTITION BY aggregate_key ORDER BY handled) AS before \
         FROM effects) AS ordered WHERE before IS NOT NULL AND n <> before + 1",
    )
    .await;
    assert_eq!(out_of_order, 0, "per-aggregate order kept");
}

#[tokio::test]
async fn a_poison_event_is_parked_and_the_others_go_through() {
    let bus = spawn_bus().await;
    emit(&bus, "offering:p", 1..=5).await;
    relay_once(&bus.producer_pool, &bus.bus, 100)
        .await
        .expect("relayed");
    let subscriber = subscriber(
        &bus,
        Record {
            poison: Some(2),
            stall: None,
        },
    );
    let round = claimed_round(&subscriber, &bus).await;
    assert_eq!((round.handled, round.parked), (4, 1), "{round:?}");
    assert_eq!(
        count(
            &bus.consumer,
            "SELECT count(*) AS n FROM parked_events WHERE attempts = 3 AND last_error LIKE 'installment 2%'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&bus.consumer, "SELECT count(*) AS n FROM effects").await,
        4
    );
    // Nothing is left for the next round: the cursor moved past it.
    let next = claimed_round(&subscriber, &bus).await;
    assert_eq!((next.handled, next.parked, next.duplicates), (0, 0, 0));
}
