//! The transports' conformance: a producer's outbox relayed and handled by
//! a subscriber in another service's database, on a real PostgreSQL and a
//! real RabbitMQ, with the same scenarios on each — an event committed is
//! delivered even when the relay died after publishing, a redelivered event
//! is applied once, a subscriber killed mid-batch loses nothing, order per
//! aggregate holds with two relays at once, a poison event is parked
//! without blocking the others, and the transport going away mid-stream
//! (the broker restarted; the bus database's connections cut) loses
//! nothing. The RabbitMQ scenarios share one broker and run one at a time
//! (`.config/nextest.toml`), each in exchanges and queues of its own.

use std::{sync::Arc, time::Duration};

use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use prost::Message;
use safra::{
    bus::{
        Bus as Transport,
        postgres::{Outgoing, PgBus},
        rabbit::RabbitBus,
        relay::relay_once,
        subscriber::{Handler, HandlerError, HandlerFuture, Prepared, Retries, Subscriber},
    },
    config::Secret,
    data::{db::Database, outbox::OutboxEvent},
    events::v1::{Envelope, PaymentConfirmed},
};
use safra_test_support::TestDatabase;

const SUBSCRIBER: &str = "test-subscriber";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Rabbit,
}

struct Bus {
    /// Whether subscribers of this run handle batches in one transaction.
    batches: bool,
    producer: TestDatabase,
    consumer: TestDatabase,
    bus_db: TestDatabase,
    producer_pool: Database,
    consumer_pool: Database,
    bus: Transport,
    kind: Kind,
    namespace: String,
}

/// The broker the tests use: SAFRA_TEST_BROKER, else the local one.
pub(crate) fn broker_url() -> Secret {
    Secret::new(
        std::env::var("SAFRA_TEST_BROKER")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
    )
}

async fn spawn_bus(kind: Kind) -> Bus {
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
    let namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    let bus = match kind {
        Kind::Postgres => Transport::Postgres(PgBus::new(
            Database::connect(&bus_db.config()).await.expect("pool"),
        )),
        Kind::Rabbit => Transport::Rabbit(
            RabbitBus::new(broker_url(), namespace.clone())
                .declaring(SUBSCRIBER, ["safra.events.v1.PaymentConfirmed"]),
        ),
    };
    Bus {
        batches: false,
        producer_pool: Database::connect(&producer.config()).await.expect("pool"),
        consumer_pool: Database::connect(&consumer.config()).await.expect("pool"),
        bus,
        producer,
        consumer,
        bus_db,
        kind,
        namespace,
    }
}

/// Removes the queues of `subscribers` and the exchanges of `namespace`
/// from the test broker.
pub(crate) async fn clean_up_broker(namespace: &str, subscribers: &[&str]) {
    let connection = lapin::Connection::connect(
        broker_url().expose(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("the broker");
    let channel = connection.create_channel().await.expect("a channel");
    for subscriber in subscribers {
        for queue in [
            format!("{namespace}.{subscriber}"),
            format!("{namespace}.{subscriber}.dead"),
        ] {
            drop(
                channel
                    .queue_delete(
                        queue.as_str().into(),
                        lapin::options::QueueDeleteOptions::default(),
                    )
                    .await,
            );
        }
    }
    for exchange in [format!("{namespace}.events"), format!("{namespace}.dead")] {
        drop(
            channel
                .exchange_delete(
                    exchange.as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await,
        );
    }
}

impl Bus {
    /// Removes what the scenario declared on the broker.
    async fn clean_up(&self) {
        if self.kind == Kind::Rabbit {
            clean_up_broker(&self.namespace, &[SUBSCRIBER]).await;
        }
    }

    /// Runs `subscriber` in the background, as a service does.
    fn run(&self, subscriber: Subscriber) -> tokio::task::JoinHandle<()> {
        tokio::spawn(subscriber.run(self.bus.clone(), std::future::pending()))
    }

    /// Relays the whole outbox.
    async fn relay_all(&self) {
        for _ in 0..100 {
            relay_once(&self.producer_pool, &self.bus, 100)
                .await
                .expect("relayed");
            if count(
                &self.producer,
                "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL",
            )
            .await
                == 0
            {
                return;
            }
        }
        panic!("the outbox did not drain");
    }

    /// Delivers every event published so far once more: the PostgreSQL
    /// cursor rewinds; the broker gets them again.
    async fn redeliver(&self, written: &[Outgoing]) {
        match self.kind {
            Kind::Postgres => {
                let mut conn = safra::data::db::connect_once(self.bus_db.url().expose())
                    .await
                    .expect("connect");
                conn.batch_execute("UPDATE subscriber_cursors SET position = 0")
                    .await
                    .expect("rewind");
            }
            Kind::Rabbit => self.bus.publish(written).await.expect("published again"),
        }
    }

    /// Waits until the consumer's `query` counts `expected`, for 30 s.
    async fn until(&self, query: &str, expected: i64) {
        for _ in 0..600 {
            if count(&self.consumer, query).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{query}: {} after 30 s, not {expected}",
            count(&self.consumer, query).await
        );
    }
}

const EFFECTS: &str = "SELECT count(*) AS n FROM effects";

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
/// `stall`; handles batches in one transaction when `batch`.
#[derive(Clone, Copy)]
struct Record {
    poison: Option<i32>,
    stall: Option<i32>,
    batch: bool,
}

impl Handler for Record {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        _prepared: &'a Prepared,
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

    fn batches(&self) -> bool {
        self.batch
    }
}

fn subscriber(bus: &Bus, handler: Record) -> Subscriber {
    subscriber_with(
        bus,
        Arc::new(Record {
            batch: bus.batches,
            ..handler
        }),
    )
}

/// The test subscriber with `handler`, retrying three times quickly.
fn subscriber_with(bus: &Bus, handler: Arc<dyn Handler>) -> Subscriber {
    Subscriber::new(
        SUBSCRIBER,
        ["safra.events.v1.PaymentConfirmed"],
        handler,
        bus.consumer_pool.clone(),
        Retries {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
    )
}

const HEALTHY: Record = Record {
    poison: None,
    stall: None,
    batch: false,
};

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

/// Runs `scenario` on both transports' tests, and on PostgreSQL once more
/// with the subscriber handling batches in one transaction.
macro_rules! on_both_transports {
    ($scenario:ident, $postgres:ident, $batched:ident, $rabbit:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let bus = spawn_bus(Kind::Postgres).await;
            $scenario(&bus).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $batched() {
            let mut bus = spawn_bus(Kind::Postgres).await;
            bus.batches = true;
            $scenario(&bus).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $rabbit() {
            let bus = spawn_bus(Kind::Rabbit).await;
            $scenario(&bus).await;
            bus.clean_up().await;
        }
    };
}

/// Prepares each event by counting the transactions held open between
/// statements on the consumer's database at that moment (from a connection
/// of its own; a statement running on its own, such as the test's polling,
/// is not one), and records the count as the effect's `n`.
struct Preparing {
    consumer_url: String,
}

impl Handler for Preparing {
    fn prepare<'a>(&'a self, _envelope: &'a Envelope) -> safra::bus::subscriber::PrepareFuture<'a> {
        Box::pin(async move {
            let mut conn = safra::data::db::connect_once(&self.consumer_url)
                .await
                .map_err(|error| HandlerError(error.to_string()))?;
            let open: Vec<Count> = diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND state LIKE 'idle in transaction%'",
            )
            .load(&mut conn)
            .await?;
            Ok(Prepared::new(
                <[Count]>::first(&open).map_or(-1, |row| row.n),
            ))
        })
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        prepared: &'a Prepared,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            let open = prepared
                .get::<i64>()
                .ok_or_else(|| HandlerError("nothing was prepared".into()))?;
            diesel::sql_query(
                "INSERT INTO effects (event_id, aggregate_key, n) VALUES ($1::uuid, $2, $3)",
            )
            .bind::<diesel::sql_types::Text, _>(&envelope.id)
            .bind::<diesel::sql_types::Text, _>(&envelope.aggregate_key)
            .bind::<diesel::sql_types::Integer, _>(i32::try_from(*open).unwrap_or(i32::MAX))
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

on_both_transports!(
    prepared_with_no_transaction_open_then_handled_with_what_it_gathered,
    postgres_prepares_with_no_transaction_open,
    postgres_batched_prepares_with_no_transaction_open,
    rabbitmq_prepares_with_no_transaction_open
);

/// A handler that needs another service (distribution asks the marketplace
/// for the holders) gathers it before its transaction opens: while it
/// prepares, no transaction is open on its database, and the effect is
/// applied with what it gathered.
async fn prepared_with_no_transaction_open_then_handled_with_what_it_gathered(bus: &Bus) {
    let written = emit(bus, "offering:p", 1..=5).await;
    let subscriber = bus.run(subscriber_with(
        bus,
        Arc::new(Preparing {
            consumer_url: bus.consumer.url().expose().to_owned(),
        }),
    ));
    bus.bus.publish(&written).await.expect("published");
    bus.until(EFFECTS, 5).await;
    assert_eq!(
        count(
            &bus.consumer,
            "SELECT count(*) AS n FROM effects WHERE n = 0"
        )
        .await,
        5,
        "a transaction was open on the consumer's database while an event was prepared"
    );
    subscriber.abort();
}

/// RabbitMQ with a subscriber whose handler takes batches: what the broker
/// has already delivered is handled in one transaction and acknowledged at
/// once, and the guarantees hold as they do one delivery at a time.
async fn rabbit_batched() -> Bus {
    let mut bus = spawn_bus(Kind::Rabbit).await;
    bus.batches = true;
    bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_batched_delivers_once_though_the_relay_died_after_publishing() {
    let bus = rabbit_batched().await;
    delivered_once_though_the_relay_died_after_publishing(&bus).await;
    bus.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_batched_keeps_order_per_aggregate_with_two_relays() {
    let bus = rabbit_batched().await;
    order_per_aggregate_holds_with_two_relays_at_once(&bus).await;
    bus.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_batched_parks_a_poison_event() {
    let bus = rabbit_batched().await;
    a_poison_event_is_parked_and_the_others_go_through(&bus).await;
    bus.clean_up().await;
}

on_both_transports!(
    delivered_once_though_the_relay_died_after_publishing,
    postgres_delivers_once_though_the_relay_died_after_publishing,
    postgres_batched_delivers_once_though_the_relay_died_after_publishing,
    rabbitmq_delivers_once_though_the_relay_died_after_publishing
);

async fn delivered_once_though_the_relay_died_after_publishing(bus: &Bus) {
    let written = emit(bus, "offering:a", 1..=5).await;
    let subscriber = bus.run(subscriber(bus, HEALTHY));
    // A relay published the first three, then died before marking them.
    bus.bus.publish(&written[..3]).await.expect("published");
    assert_eq!(
        relay_once(&bus.producer_pool, &bus.bus, 100)
            .await
            .expect("relayed"),
        5,
        "the restarted relay publishes every unmarked row"
    );
    bus.until(EFFECTS, 5).await;
    if bus.kind == Kind::Postgres {
        assert_eq!(
            count(&bus.bus_db, "SELECT count(*) AS n FROM event_log").await,
            5,
            "the log keeps each event once"
        );
    }

    // Delivered again: applied once. A later event, handled after the
    // redelivered ones (order holds), shows they were seen.
    bus.redeliver(&written).await;
    emit(bus, "offering:a", [6]).await;
    bus.relay_all().await;
    bus.until(EFFECTS, 6).await;
    assert_eq!(
        count(
            &bus.consumer,
            "SELECT count(*) AS n FROM processed_events WHERE subscriber = 'test-subscriber'"
        )
        .await,
        6
    );
    subscriber.abort();
}

on_both_transports!(
    a_subscriber_killed_mid_batch_loses_nothing,
    postgres_subscriber_killed_mid_batch_loses_nothing,
    postgres_batched_subscriber_killed_mid_batch_loses_nothing,
    rabbitmq_subscriber_killed_mid_batch_loses_nothing
);

async fn a_subscriber_killed_mid_batch_loses_nothing(bus: &Bus) {
    emit(bus, "offering:k", 1..=5).await;
    bus.relay_all().await;
    let stalling = bus.run(subscriber(
        bus,
        Record {
            poison: None,
            stall: Some(3),
            batch: false,
        },
    ));
    if bus.batches {
        // One transaction holds the whole batch, stalled at the third event.
        bus.until(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'idle in transaction'",
            1,
        )
        .await;
    } else {
        bus.until(EFFECTS, 2).await;
    }
    stalling.abort();
    assert!(stalling.await.is_err(), "killed mid-batch");

    let healthy = bus.run(subscriber(bus, HEALTHY));
    bus.until("SELECT count(DISTINCT n) AS n FROM effects", 5)
        .await;
    emit(bus, "offering:k", [6]).await;
    bus.relay_all().await;
    bus.until(EFFECTS, 6).await;
    assert_eq!(
        count(&bus.consumer, "SELECT count(DISTINCT n) AS n FROM effects").await,
        6,
        "nothing applied twice"
    );
    healthy.abort();
}

on_both_transports!(
    order_per_aggregate_holds_with_two_relays_at_once,
    postgres_keeps_order_per_aggregate_with_two_relays,
    postgres_batched_keeps_order_per_aggregate_with_two_relays,
    rabbitmq_keeps_order_per_aggregate_with_two_relays
);

async fn order_per_aggregate_holds_with_two_relays_at_once(bus: &Bus) {
    for n in 1..=20 {
        for aggregate in ["offering:x", "offering:y", "offering:z"] {
            emit(bus, aggregate, [n]).await;
        }
    }
    let subscriber = bus.run(subscriber(bus, HEALTHY));
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let producer = bus.producer_pool.clone();
            let transport = bus.bus.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    if relay_once(&producer, &transport, 7).await.expect("relayed") == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    bus.until(EFFECTS, 60).await;
    for relay in relays {
        relay.abort();
    }
    // Within each aggregate, handled in the order the events were written.
    let out_of_order = count(
        &bus.consumer,
        "SELECT count(*) AS n FROM (SELECT n, lag(n) OVER (PARTITION BY aggregate_key ORDER BY handled) AS before \
         FROM effects) AS ordered WHERE before IS NOT NULL AND n <> before + 1",
    )
    .await;
    assert_eq!(out_of_order, 0, "per-aggregate order kept");
    subscriber.abort();
}

on_both_transports!(
    a_poison_event_is_parked_and_the_others_go_through,
    postgres_parks_a_poison_event,
    postgres_batched_parks_a_poison_event,
    rabbitmq_parks_a_poison_event
);

async fn a_poison_event_is_parked_and_the_others_go_through(bus: &Bus) {
    emit(bus, "offering:p", 1..=5).await;
    bus.relay_all().await;
    let subscriber = bus.run(subscriber(
        bus,
        Record {
            poison: Some(2),
            stall: None,
            batch: false,
        },
    ));
    bus.until(EFFECTS, 4).await;
    bus.until(
        "SELECT count(*) AS n FROM parked_events WHERE attempts = 3 AND last_error LIKE 'installment 2%'",
        1,
    )
    .await;
    // It blocks nothing after it either.
    emit(bus, "offering:p", [6]).await;
    bus.relay_all().await;
    bus.until(EFFECTS, 5).await;
    assert_eq!(
        count(&bus.consumer, "SELECT count(*) AS n FROM parked_events").await,
        1
    );
    subscriber.abort();
}

on_both_transports!(
    the_transport_going_away_mid_stream_loses_nothing,
    postgres_loses_nothing_when_the_bus_connections_are_cut,
    postgres_batched_loses_nothing_when_the_bus_connections_are_cut,
    rabbitmq_loses_nothing_when_the_broker_restarts
);

async fn the_transport_going_away_mid_stream_loses_nothing(bus: &Bus) {
    let subscriber = bus.run(subscriber(bus, HEALTHY));
    let relay = tokio::spawn(safra::bus::relay::run(
        bus.producer_pool.clone(),
        bus.bus.clone(),
        std::future::pending(),
    ));
    emit(bus, "offering:r", 1..=20).await;
    bus.until(EFFECTS, 20).await;
    // Events committed while the transport is away wait in the outbox.
    match bus.kind {
        Kind::Postgres => {
            let server = std::env::var("DATABASE_URL").expect("DATABASE_URL");
            let mut conn = safra::data::db::connect_once(&server)
                .await
                .expect("connect");
            let database = bus.bus_db.name();
            diesel::sql_query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind::<diesel::sql_types::Text, _>(database)
            .execute(&mut conn)
            .await
            .expect("cut");
            emit(bus, "offering:r", 21..=40).await;
        }
        Kind::Rabbit => {
            // Some in flight when it stops, the rest while it is down.
            emit(bus, "offering:r", 21..=30).await;
            rabbitmqctl(&["stop_app"]);
            emit(bus, "offering:r", 31..=40).await;
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
        }
    }
    bus.until(EFFECTS, 40).await;
    assert_eq!(
        count(&bus.consumer, "SELECT count(DISTINCT n) AS n FROM effects").await,
        40
    );
    let out_of_order = count(
        &bus.consumer,
        "SELECT count(*) AS n FROM (SELECT n, lag(n) OVER (ORDER BY handled) AS before \
         FROM effects) AS ordered WHERE before IS NOT NULL AND n <> before + 1",
    )
    .await;
    assert_eq!(out_of_order, 0, "order kept across the outage");
    relay.abort();
    subscriber.abort();
}

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(["-q"])
        .args(args)
        .status()
        .expect("rabbitmqctl runs (scripts/test installs RabbitMQ)");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

/// Records each PaymentConfirmed, failing for installment `poison` while
/// it is set (0: none).
struct Switchable {
    poison: Arc<std::sync::atomic::AtomicI32>,
}

impl Handler for Switchable {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        prepared: &'a Prepared,
    ) -> HandlerFuture<'a> {
        let poison =
            std::sync::atomic::AtomicI32::load(&self.poison, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            Record {
                poison: (poison != 0).then_some(poison),
                stall: None,
                batch: false,
            }
            .handle(conn, envelope, prepared)
            .await
        })
    }
}

on_both_transports!(
    the_jobs_monitor_shows_the_backlog_and_retries_or_discards_parked_events,
    postgres_jobs_monitor_retries_and_discards,
    postgres_batched_jobs_monitor_retries_and_discards,
    rabbitmq_jobs_monitor_retries_and_discards
);

async fn the_jobs_monitor_shows_the_backlog_and_retries_or_discards_parked_events(bus: &Bus) {
    use safra::jobs::v1::{
        DiscardParkedEventRequest, ListParkedEventsRequest, ListSubscriptionsRequest,
        RetryParkedEventRequest, jobs_service_server::JobsService,
    };
    use tonic::Request;

    let poison = Arc::new(std::sync::atomic::AtomicI32::new(2));
    let subscriber = subscriber_with(
        bus,
        Arc::new(Switchable {
            poison: poison.clone(),
        }),
    );
    let jobs = safra::bus::jobs::Jobs::new(
        "notifications",
        bus.consumer_pool.clone(),
        Some(bus.bus.clone()),
        vec![subscriber.clone()],
    );
    let subscription = || async {
        let listed = jobs
            .list_subscriptions(Request::new(ListSubscriptionsRequest::default()))
            .await
            .expect("listed")
            .into_inner();
        let [subscription] = listed.subscriptions.as_slice() else {
            panic!("one subscription: {listed:?}");
        };
        subscription.clone()
    };

    // Published, nobody handling yet: a backlog of three.
    emit(bus, "offering:j", 1..=3).await;
    bus.relay_all().await;
    let waiting = subscription().await;
    assert_eq!(waiting.backlog, 3, "{waiting:?}");
    assert_eq!(waiting.handled_total, 0);
    if bus.kind == Kind::Postgres {
        assert!(
            waiting
                .lag
                .is_some_and(|lag| lag.seconds > 0 || lag.nanos > 0)
        );
    }

    let running = bus.run(subscriber);
    bus.until(EFFECTS, 2).await;
    bus.until("SELECT count(*) AS n FROM parked_events", 1)
        .await;
    let settled = subscription().await;
    assert_eq!(
        (settled.parked, settled.handled_total, settled.retries_total),
        (1, 2, 2),
        "{settled:?}"
    );
    let parked = jobs
        .list_parked_events(Request::new(ListParkedEventsRequest::default()))
        .await
        .expect("listed")
        .into_inner()
        .parked_events;
    let [entry] = parked.as_slice() else {
        panic!("one parked event: {parked:?}");
    };
    assert_eq!(entry.attempts, 3);
    assert!(entry.last_error.starts_with("installment 2"), "{entry:?}");
    assert_eq!(
        entry.event.as_ref().map(|event| event.r#type.as_str()),
        Some("safra.events.v1.PaymentConfirmed")
    );

    // Retried while still broken: it stays parked, with more attempts.
    let again = jobs
        .retry_parked_event(Request::new(RetryParkedEventRequest {
            parked_event_id: entry.id.clone(),
        }))
        .await
        .expect_err("it fails again");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        count(
            &bus.consumer,
            "SELECT count(*) AS n FROM parked_events WHERE attempts = 6"
        )
        .await,
        1
    );

    // Fixed, retried: handled, and no longer parked.
    poison.store(0, std::sync::atomic::Ordering::SeqCst);
    jobs.retry_parked_event(Request::new(RetryParkedEventRequest {
        parked_event_id: entry.id.clone(),
    }))
    .await
    .expect("retried");
    bus.until(EFFECTS, 3).await;
    bus.until("SELECT count(*) AS n FROM parked_events", 0)
        .await;

    // Another poison, discarded: gone, never applied.
    poison.store(4, std::sync::atomic::Ordering::SeqCst);
    emit(bus, "offering:j", [4]).await;
    bus.relay_all().await;
    bus.until("SELECT count(*) AS n FROM parked_events", 1)
        .await;
    let parked = jobs
        .list_parked_events(Request::new(ListParkedEventsRequest::default()))
        .await
        .expect("listed")
        .into_inner()
        .parked_events;
    jobs.discard_parked_event(Request::new(DiscardParkedEventRequest {
        parked_event_id: parked[0].id.clone(),
    }))
    .await
    .expect("discarded");
    assert_eq!(
        count(&bus.consumer, "SELECT count(*) AS n FROM parked_events").await,
        0
    );
    assert_eq!(count(&bus.consumer, EFFECTS).await, 3);
    let missing = jobs
        .discard_parked_event(Request::new(DiscardParkedEventRequest {
            parked_event_id: parked[0].id.clone(),
        }))
        .await
        .expect_err("already gone");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    running.abort();
}
