//! Retention: what the bus keeps is bounded in time, never ahead of a
//! subscriber that still needs it.
//!
//! Each service's database sheds, in batches, the outbox rows published
//! and the handled event ids recorded longer ago than the retention
//! (the ids de-duplicate redeliveries, which come within minutes, not
//! days). The PostgreSQL bus's event log sheds entries older than the
//! retention *and* at or below the cursor of every subscriber that holds
//! it: every subscriber of the mesh's list ([`super::subscriptions::MESH`])
//! that has a cursor, and a cursor of a subscriber no longer in the list
//! until it has not moved for the idle time (then it is *retired*, shown as
//! such in the jobs monitor, and no longer holds the log). A subscriber
//! that starts after its events were shed begins at the oldest entry kept.
//!
//! Every replica of every service runs a round now and then, at a random
//! offset so replicas started together spread out; two rounds that meet
//! delete the same rows at worst (one waits, then finds them gone). Every
//! delete is a batch of at most [`BATCH`] rows, so no statement holds locks
//! for long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Nullable, Text, Timestamptz},
};
use diesel_async::RunQueryDsl;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::subscriptions;
use crate::data::{
    db::{Database, DbError},
    statement::Statement,
};

/// Rows one delete statement removes at most.
pub const BATCH: i64 = 10_000;
/// Batches one round removes from a table at most, so a round after a
/// long pause catches up over a few rounds instead of running for long.
const BATCHES_PER_ROUND: usize = 100;

/// How long things are kept, and how often a round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// `SAFRA_BUS_RETENTION_HOURS` (168): published outbox rows, handled
    /// event ids and event-log entries older than this go.
    pub keep: Duration,
    /// `SAFRA_BUS_IDLE_CURSOR_HOURS` (168): a cursor of a subscriber no
    /// longer in the mesh's list that has not moved for this long stops
    /// holding the event log.
    pub idle_cursor: Duration,
    /// How often a replica runs a round (10 minutes).
    pub every: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(7 * 24 * 3600),
            idle_cursor: Duration::from_secs(7 * 24 * 3600),
            every: Duration::from_secs(600),
        }
    }
}

/// Rows removed, by table, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RetentionMetrics {
    pruned: Family<TableLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

impl RetentionMetrics {
    /// Adds the figures to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "safra_bus_pruned_rows",
            "Rows removed by retention, by table (outbox, processed_events, event_log)",
            self.pruned.clone(),
        );
    }

    fn count(&self, table: &'static str, rows: usize) {
        self.pruned
            .get_or_create(&TableLabels { table })
            .inc_by(u64::try_from(rows).unwrap_or(u64::MAX));
    }
}

/// What one round removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Published outbox rows.
    pub outbox: usize,
    /// Handled event ids.
    pub processed_events: usize,
    /// Event-log entries.
    pub event_log: usize,
}

/// Runs a round every `settings.every` (the first after a random part of
/// it, so replicas started together spread out) until `stop` completes.
pub async fn run(
    service: Database,
    bus: Option<Database>,
    settings: RetentionSettings,
    metrics: RetentionMetrics,
    stop: impl std::future::Future<Output = ()>,
) {
    let first = settings.every.mul_f64(jitter());
    let rounds = async {
        tokio::time::sleep(first).await;
        loop {
            match round(&service, bus.as_ref(), settings, Utc::now()).await {
                Ok(pruned) => {
                    metrics.count("outbox", pruned.outbox);
                    metrics.count("processed_events", pruned.processed_events);
                    metrics.count("event_log", pruned.event_log);
                    if pruned != Pruned::default() {
                        tracing::info!(?pruned, "retention round");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "retention round failed; the next one retries");
                }
            }
            tokio::time::sleep(settings.every).await;
        }
    };
    tokio::select! {
        () = stop => {}
        () = rounds => {}
    }
}

/// A number in [0, 1) that differs between processes.
fn jitter() -> f64 {
    use std::hash::BuildHasher as _;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    #[allow(clippy::cast_precision_loss, reason = "a fraction, not a count")]
    let fraction = (random % 1_000_000) as f64 / 1_000_000.0;
    fraction
}

/// One round at `now`: the service's database, then the event log.
///
/// # Errors
/// A database failed; what was removed before stays removed.
pub async fn round(
    service: &Database,
    bus: Option<&Database>,
    settings: RetentionSettings,
    now: DateTime<Utc>,
) -> Result<Pruned, DbError> {
    let cutoff = now - chrono::Duration::from_std(settings.keep).unwrap_or(chrono::Duration::MAX);
    let mut pruned = Pruned {
        outbox: repeat(service, || {
            Statement::new(
                "DELETE FROM outbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM outbox \
                 WHERE published_at < $1 ORDER BY published_at LIMIT $2))",
            )
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(BATCH)
        })
        .await?,
        processed_events: repeat(service, || {
            Statement::new(
                "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(SELECT ctid \
                 FROM processed_events WHERE processed_time < $1 \
                 ORDER BY processed_time LIMIT $2))",
            )
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(BATCH)
        })
        .await?,
        event_log: 0,
    };
    if let Some(bus) = bus {
        pruned.event_log = prune_event_log(bus, settings, now, cutoff).await?;
    }
    Ok(pruned)
}

/// The deletes pick their batch's rows by `ctid` (`= ANY(ARRAY(...))`): the
/// planner then fetches exactly those rows, where `id IN (subquery)` let it
/// choose a hash join over the whole table (225 ms a batch on a million
/// outbox rows in `bench/retention.sh`, against 12 ms).
///
/// Runs the delete `statement` makes, batch after batch, until a batch
/// removes fewer than [`BATCH`] rows (or the round's bound). Each batch is
/// its own transaction.
async fn repeat<S>(db: &Database, statement: impl Fn() -> S) -> Result<usize, DbError>
where
    S: diesel_async::methods::ExecuteDsl<diesel_async::AsyncPgConnection> + Send,
{
    let mut conn = db.connection().await?;
    let mut total = 0;
    for _ in 0..BATCHES_PER_ROUND {
        let removed = statement()
            .execute(&mut conn)
            .await
            .map_err(DbError::Query)?;
        total += removed;
        if i64::try_from(removed).unwrap_or(i64::MAX) < BATCH {
            break;
        }
    }
    Ok(total)
}

#[derive(QueryableByName)]
struct Floor {
    #[diesel(sql_type = Nullable<BigInt>)]
    floor: Option<i64>,
}

/// Removes event-log entries older than `cutoff` at or below the lowest
/// cursor that holds the log: a subscriber of the mesh's list, or any
/// cursor that moved since the idle time.
async fn prune_event_log(
    bus: &Database,
    settings: RetentionSettings,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> Result<usize, DbError> {
    let idle_since =
        now - chrono::Duration::from_std(settings.idle_cursor).unwrap_or(chrono::Duration::MAX);
    let names = subscriptions::names();
    let floor = {
        let mut conn = bus.connection().await?;
        let rows: Vec<Floor> = Statement::new(
            "SELECT min(position) AS floor FROM subscriber_cursors \
             WHERE subscriber = ANY($1) OR update_time > $2",
        )
        .bind::<Array<Text>, _>(&names)
        .bind::<Timestamptz, _>(idle_since)
        .load(&mut conn)
        .await
        .map_err(DbError::Query)?;
        <[Floor]>::first(&rows).and_then(|row| row.floor)
    };
    // No cursor holds the log (no subscriber ever ran): keep it all rather
    // than guess.
    let Some(floor) = floor else {
        return Ok(0);
    };
    repeat(bus, || {
        Statement::new(
            "DELETE FROM event_log WHERE position IN (SELECT position FROM event_log \
             WHERE position <= $1 AND create_time < $2 ORDER BY position LIMIT $3)",
        )
        .bind::<BigInt, _>(floor)
        .bind::<Timestamptz, _>(cutoff)
        .bind::<BigInt, _>(BATCH)
    })
    .await
}
