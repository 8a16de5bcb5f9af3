//! Events end to end, on each transport: an outbox row committed by a
//! producer, relayed by `bus::relay::run`, handled by a subscriber in
//! another database (one row written, the handled id recorded), as the
//! services run them. Each run makes its own databases (and its own
//! RabbitMQ namespace) and drops them.
//!
//! - `events-latency <postgres|rabbitmq> <events-per-second> <seconds>`:
//!   events committed one per transaction at a steady rate; the latency of
//!   each is from its producer's commit to the subscriber's handler.
//! - `events-throughput <postgres|rabbitmq> <seconds> <writers> [per-transaction]`:
//!   `writers` commit events (`per-transaction` in each, default 1) as fast
//!   as they can for `seconds`; the rate is what the subscriber handled
//!   from the first commit to the last event handled.
//!
//! Needs DATABASE_URL (a server where databases may be created) and, for
//! `rabbitmq`, a broker at SAFRA_BROKER (default the local one).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use safra::{
    bus::{
        Bus,
        postgres::PgBus,
        rabbit::RabbitBus,
        subscriber::{Handler, HandlerFuture, Prepared, Retries, Subscriber},
    },
    config::{DatabaseConfig, Secret},
    data::{
        db::{self, Connection, Database},
        outbox::OutboxEvent,
    },
    events::v1::{Envelope, PaymentConfirmed},
};

const SUBSCRIBER: &str = "bench";
const EVENT_TYPE: &str = "safra.events.v1.PaymentConfirmed";

/// When each event committed, and how long each took to be handled.
#[derive(Default)]
struct Clock {
    committed: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<Duration>>,
    last_handled: Mutex<Option<Instant>>,
}

impl Clock {
    fn committed(&self, id: String, at: Instant) {
        if let Ok(mut committed) = self.committed.lock() {
            committed.insert(id, at);
        }
    }

    fn handled(&self, id: &str) {
        let now = Instant::now();
        let since = self
            .committed
            .lock()
            .ok()
            .and_then(|mut committed| committed.remove(id));
        if let (Some(since), Ok(mut latencies)) = (since, self.latencies.lock()) {
            latencies.push(now.duration_since(since));
        }
        if let Ok(mut last) = self.last_handled.lock() {
            *last = Some(now);
        }
    }

    fn count(&self) -> usize {
        self.latencies.lock().map_or(0, |latencies| latencies.len())
    }

    /// When the last event was handled (now, if none was).
    fn last_handled(&self) -> Instant {
        self.last_handled
            .lock()
            .ok()
            .and_then(|last| *last)
            .unwrap_or_else(Instant::now)
    }
}

/// Writes one row per event and stops the clock.
struct Timed(Arc<Clock>);

impl Handler for Timed {
    fn handle<'a>(
        &'a self,
        conn: &'a mut Connection,
        envelope: &'a Envelope,
        _prepared: &'a Prepared,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            diesel::sql_query("INSERT INTO effects (event_id) VALUES ($1::uuid)")
                .bind::<diesel::sql_types::Text, _>(&envelope.id)
                .execute(conn)
                .await?;
            self.0.handled(&envelope.id);
            Ok(())
        })
    }

    fn batches(&self) -> bool {
        true
    }

    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut Connection,
        envelopes: &'a [&'a Envelope],
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            let ids: Vec<&str> = envelopes
                .iter()
                .map(|envelope| envelope.id.as_str())
                .collect();
            diesel::sql_query(
                "INSERT INTO effects (event_id) SELECT id::uuid FROM unnest($1::text[]) AS id",
            )
            .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&ids)
            .execute(conn)
            .await?;
            for id in ids {
                self.0.handled(id);
            }
            Ok(())
        })
    }
}

/// The databases (and namespace) of one run.
struct Run {
    server: String,
    names: Vec<String>,
    producer: Database,
    consumer: Database,
    bus: Bus,
    namespace: String,
}

/// A database `name` on `server`, created if missing and migrated.
pub(crate) async fn database(
    server: &str,
    name: &str,
    migrations: &'static diesel_migrations::EmbeddedMigrations,
) -> anyhow::Result<Database> {
    let mut conn = db::connect_once(server).await?;
    db::create_database_if_missing(&mut conn, name).await?;
    let url = Secret::new(db::with_database(server, name));
    db::migrate_up(&url, migrations).await?;
    Ok(Database::connect(&DatabaseConfig {
        url,
        pool_size: 16,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 10_000,
        prepared_statements: true,
    })
    .await?)
}

impl Run {
    async fn start(transport: &str) -> anyhow::Result<Self> {
        let server = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
        let tag = format!("safra_bench_events_{}", std::process::id());
        let names: Vec<String> = ["producer", "consumer", "bus"]
            .iter()
            .map(|part| format!("{tag}_{part}"))
            .collect();
        let producer = database(&server, &names[0], &safra_wallet::MIGRATIONS).await?;
        let consumer = database(&server, &names[1], &safra_notifications::MIGRATIONS).await?;
        consumer
            .connection()
            .await?
            .batch_execute("CREATE TABLE effects (event_id uuid PRIMARY KEY)")
            .await?;
        let namespace = tag.replace('_', "-");
        let bus = match transport {
            "postgres" => Bus::Postgres(PgBus::new(
                database(&server, &names[2], &safra::bus::MIGRATIONS).await?,
            )),
            "rabbitmq" => {
                let url = std::env::var("SAFRA_BROKER")
                    .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
                Bus::Rabbit(
                    RabbitBus::new(Secret::new(url), namespace.clone())
                        .declaring(SUBSCRIBER, [EVENT_TYPE]),
                )
            }
            other => bail!("unknown transport {other}: postgres or rabbitmq"),
        };
        Ok(Self {
            server,
            names,
            producer,
            consumer,
            bus,
            namespace,
        })
    }

    /// Starts the relay and a subscriber timing with `clock`, as a service
    /// runs them; they stop when the returned sender says so.
    async fn spawn(&self, clock: &Arc<Clock>) -> tokio::sync::watch::Sender<bool> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            drop(stopped.wait_for(|stop| *stop).await);
        };
        tokio::spawn(safra::bus::relay::run(
            self.producer.clone(),
            self.bus.clone(),
            until(stopped.clone()),
        ));
        tokio::spawn(
            self.subscriber(clock)
                .run(self.bus.clone(), until(stopped.clone())),
        );
        // Let the subscriber connect (and declare its queue) first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop
    }

    fn subscriber(&self, clock: &Arc<Clock>) -> Subscriber {
        Subscriber::new(
            SUBSCRIBER,
            [EVENT_TYPE],
            Arc::new(Timed(clock.clone())),
            self.consumer.clone(),
            Retries::default(),
        )
    }

    async fn finish(self) -> anyhow::Result<()> {
        drop((self.producer, self.consumer, self.bus));
        let mut conn = db::connect_once(&self.server).await?;
        for name in &self.names {
            conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                db::quote_identifier(name)
            ))
            .await?;
        }
        for queue in [
            format!("{}.{SUBSCRIBER}", self.namespace),
            format!("{}.{SUBSCRIBER}.dead", self.namespace),
        ] {
            // Only there on RabbitMQ; the broker's tool removes them.
            drop(
                tokio::process::Command::new("rabbitmqctl")
                    .args(["-q", "delete_queue", &queue])
                    .output()
                    .await,
            );
        }
        Ok(())
    }
}

/// Commits one event in its own transaction; returns its id and when the
/// commit returned.
async fn commit_one(producer: &Database, n: i32) -> anyhow::Result<(String, Instant)> {
    let (mut ids, at) = commit_many(producer, n..=n).await?;
    Ok((ids.pop().unwrap_or_default(), at))
}

/// Commits events `numbers` in one transaction; returns their ids and when
/// the commit returned.
async fn commit_many(
    producer: &Database,
    numbers: std::ops::RangeInclusive<i32>,
) -> anyhow::Result<(Vec<String>, Instant)> {
    let events: Vec<OutboxEvent> = numbers
        .map(|n| {
            OutboxEvent::new(
                "wallet",
                format!("offering:bench-{}", n % 16),
                &PaymentConfirmed {
                    installment_number: n,
                    ..PaymentConfirmed::default()
                },
            )
        })
        .collect();
    let mut conn = producer.connection().await?;
    let written = events.clone();
    conn.transaction(async move |conn| {
        for event in &written {
            event.write(conn).await?;
        }
        Ok::<_, diesel::result::Error>(())
    })
    .await?;
    let at = Instant::now();
    Ok((
        events
            .iter()
            .map(|event| event.envelope().id.clone())
            .collect(),
        at,
    ))
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into the sample"
    )]
    let rank = (fraction * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Waits until `expected` events were handled, for at most 60 s.
async fn drain(clock: &Clock, expected: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while clock.count() < expected {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// `events-latency`.
pub async fn latency(transport: &str, rate: u32, seconds: u64) -> anyhow::Result<()> {
    let run = Run::start(transport).await?;
    let clock = Arc::new(Clock::default());
    let stop = run.spawn(&clock).await;

    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    let mut sent = 0_i32;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        sent += 1;
        let producer = run.producer.clone();
        let clock = clock.clone();
        writers.spawn(async move {
            let (id, at) = commit_one(&producer, sent).await?;
            clock.committed(id, at);
            anyhow::Ok(())
        });
    }
    let mut failed = 0;
    while let Some(written) = writers.join_next().await {
        if !matches!(written, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let produced = started.elapsed();
    let expected = usize::try_from(sent).unwrap_or(0) - failed;
    let drained = drain(&clock, expected).await;
    let _ = stop.send(true);
    let mut latencies = clock
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort();
    #[allow(clippy::cast_precision_loss, reason = "a rate")]
    let produced_rate = f64::from(sent) / produced.as_secs_f64();
    println!(
        "| {transport} | {rate} | {produced_rate:.0} | {} | {:.2} | {:.2} | {:.2} | {}{} |",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        failed,
        if drained {
            ""
        } else {
            " (not drained in 60 s)"
        }
    );
    run.finish().await
}

/// `events-throughput`.
pub async fn throughput(
    transport: &str,
    seconds: u64,
    writers: usize,
    per_transaction: i32,
) -> anyhow::Result<()> {
    let per_transaction = per_transaction.max(1);
    let run = Run::start(transport).await?;
    let clock = Arc::new(Clock::default());
    let stop = run.spawn(&clock).await;

    let started = Instant::now();
    let window = Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let producer = run.producer.clone();
        let clock = clock.clone();
        tasks.spawn(async move {
            let mut n = 0_i32;
            let mut written = 0_usize;
            while started.elapsed() < window {
                let first = i32::try_from(writer).unwrap_or(0) * 1_000_000 + n + 1;
                n += per_transaction;
                if let Ok((ids, at)) =
                    commit_many(&producer, first..=first + per_transaction - 1).await
                {
                    written += ids.len();
                    for id in ids {
                        clock.committed(id, at);
                    }
                }
            }
            written
        });
    }
    let mut written = 0;
    while let Some(count) = tasks.join_next().await {
        written += count.unwrap_or(0);
    }
    let committed = started.elapsed();
    let drained = drain(&clock, written).await;
    let _ = stop.send(true);
    let last = clock.last_handled();
    let handled = clock.count();
    #[allow(clippy::cast_precision_loss, reason = "rates")]
    let (committed_rate, handled_rate) = (
        written as f64 / committed.as_secs_f64(),
        handled as f64 / last.duration_since(started).as_secs_f64(),
    );
    let mut latencies = clock
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort();
    println!(
        "| {transport} | {writers} | {per_transaction} | {written} | {committed_rate:.0} | {handled_rate:.0} | {:.1} | {:.1} |{}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        if drained { "" } else { " not drained in 60 s" }
    );
    run.finish().await
}

/// `events-drain`: `events` events already in the outbox (written
/// beforehand, 1,000 per transaction), then the relay and the subscriber
/// started: how fast they empty it, from their start to the last event
/// handled.
pub async fn drain_outbox(transport: &str, events: usize) -> anyhow::Result<()> {
    const PER_TRANSACTION: usize = 1_000;
    let run = Run::start(transport).await?;
    let clock = Arc::new(Clock::default());
    let filled = Instant::now();
    let mut ids = Vec::with_capacity(events);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..events.div_ceil(PER_TRANSACTION) {
        let first = chunk * PER_TRANSACTION;
        let batch: Vec<OutboxEvent> = (first..(first + PER_TRANSACTION).min(events))
            .map(|n| {
                let number = i32::try_from(n).unwrap_or(i32::MAX);
                OutboxEvent::new(
                    "wallet",
                    format!("offering:bench-{}", n % 64),
                    &PaymentConfirmed {
                        installment_number: number,
                        ..PaymentConfirmed::default()
                    },
                )
            })
            .collect();
        ids.extend(batch.iter().map(|event| event.envelope().id.clone()));
        let producer = run.producer.clone();
        tasks.spawn(async move {
            let mut conn = producer.connection().await?;
            conn.transaction(async move |conn| {
                for event in &batch {
                    event.write(conn).await?;
                }
                Ok::<_, diesel::result::Error>(())
            })
            .await?;
            anyhow::Ok(())
        });
        // Four transactions at a time.
        while tasks.len() >= 4 {
            if let Some(written) = tasks.join_next().await {
                written??;
            }
        }
    }
    while let Some(written) = tasks.join_next().await {
        written??;
    }
    let fill_seconds = filled.elapsed().as_secs_f64();
    let started = Instant::now();
    for id in ids {
        clock.committed(id, started);
    }
    let stop = run.spawn(&clock).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while clock.count() < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let last = clock.last_handled();
    let handled = clock.count();
    let seconds = last.duration_since(started).as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "rates")]
    let rate = handled as f64 / seconds;
    println!(
        "| {transport} | {events} | {fill_seconds:.1} | {handled} | {seconds:.1} | {rate:.0} |{}",
        if handled < events {
            " not drained in 600 s"
        } else {
            ""
        }
    );
    run.finish().await
}
