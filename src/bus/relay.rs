//! The outbox relay: publishes a service's unpublished outbox rows to the
//! bus and marks them published only after the transport confirmed them
//! (the log committed them, or the broker acknowledged every one). Rows
//! are claimed per aggregate key (a transaction-scoped advisory lock per
//! key), so replicas share the work while the events of one aggregate are
//! published by one relay at a time, in `seq` order. A relay that dies
//! between publishing and marking publishes the rows again; the log keeps
//! each event id once.

use crate::data::statement::Statement;
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Bytea, Text, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Bus, BusError, postgres::Outgoing};
use crate::{data::db::Database, observability::telemetry};

/// Rows one relay round publishes at most.
const ROWS_PER_ROUND: i64 = 2_000;
/// How long an idle relay waits before looking again when nothing woke it
/// (the outbox's insert trigger notifies `safra_outbox`; this is the
/// safety net under a lost notification).
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The channel the outbox's trigger notifies.
const OUTBOX_CHANNEL: &str = "safra_outbox";
/// How long it waits after a failure (a database away).
const FAILURE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Aggregates one relay round takes at most.
const KEYS_PER_ROUND: i64 = 64;
/// Rows of one aggregate a round reads at most: each key's rows come from
/// its own index range, so a long backlog of one key costs a round no
/// more than this.
const ROWS_PER_KEY: i64 = 256;

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    aggregate_key: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Bytea)]
    payload: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    traceparent: Option<String>,
}

/// Publishes up to `limit` unpublished rows of `producer`'s outbox to
/// `bus`; returns how many.
///
/// # Errors
/// Either database; nothing is marked published unless the bus has it.
pub async fn relay_once(producer: &Database, bus: &Bus, limit: i64) -> Result<usize, BusError> {
    let mut conn = producer.connection().await?;
    let bus = bus.clone();
    conn.transaction(async move |conn| {
        // One round trip claims the oldest aggregates no other relay holds
        // (a transaction-scoped advisory lock per key, taken only for the
        // keys past the LIMIT, since a subquery with a LIMIT is not
        // flattened) and reads their unpublished rows in order. The keys
        // come from the oldest unpublished rows only (the partial index on
        // create_time, seq), so a long backlog costs each round no more.
        let rows: Vec<Row> = Statement::new(
            "WITH claimed AS ( \
                 SELECT k.aggregate_key FROM ( \
                     SELECT aggregate_key, min(seq) AS first FROM ( \
                         SELECT aggregate_key, seq FROM outbox WHERE published_at IS NULL \
                         ORDER BY create_time, seq LIMIT $2) AS oldest \
                     GROUP BY aggregate_key ORDER BY min(seq) LIMIT $1) AS k \
                 WHERE pg_try_advisory_xact_lock(hashtextextended('safra.outbox/' || k.aggregate_key, 0))) \
             SELECT o.id, o.aggregate_key, o.event_type, o.payload, o.traceparent \
             FROM claimed c CROSS JOIN LATERAL ( \
                 SELECT id, aggregate_key, event_type, payload, traceparent, seq FROM outbox \
                 WHERE published_at IS NULL AND aggregate_key = c.aggregate_key \
                 ORDER BY seq LIMIT $3) AS o \
             ORDER BY o.seq LIMIT $2",
        )
        .bind::<BigInt, _>(KEYS_PER_ROUND)
        .bind::<BigInt, _>(limit)
        .bind::<BigInt, _>(ROWS_PER_KEY)
        .load(conn)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // One span per event, in the trace of the call that caused it,
        // lasting while the batch is published.
        let spans: Vec<tracing::Span> = rows
            .iter()
            .map(|row| {
                let span = tracing::info_span!(
                    "publish event",
                    otel.kind = "producer",
                    event.id = %row.id,
                    event.r#type = %row.event_type,
                );
                telemetry::follow_traceparent(&span, row.traceparent.as_deref().unwrap_or(""));
                span
            })
            .collect();
        let outgoing: Vec<Outgoing> = rows
            .into_iter()
            .map(|row| Outgoing {
                event_id: row.id,
                event_type: row.event_type,
                aggregate_key: row.aggregate_key,
                envelope: row.payload,
            })
            .collect();
        bus.publish(&outgoing).await?;
        drop(spans);
        let ids: Vec<Uuid> = outgoing.iter().map(|event| event.event_id).collect();
        Statement::new("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind::<Array<SqlUuid>, _>(&ids)
            .execute(conn)
            .await?;
        Ok(ids.len())
    })
    .await
}

/// Relays `producer`'s outbox to `bus` until `stop` resolves: woken by the
/// outbox's notifications, rounds back to back while there is work, a
/// fallback look every few seconds, a pause after a failure (logged;
/// nothing is marked that the bus lacks).
pub async fn run(producer: Database, bus: Bus, stop: impl std::future::Future<Output = ()>) {
    let db = producer.clone();
    super::postgres::run_woken(db, OUTBOX_CHANNEL, stop, || async {
        match relay_once(&producer, &bus, ROWS_PER_ROUND).await {
            Ok(0) => IDLE_WAIT,
            Ok(_) => std::time::Duration::ZERO,
            Err(error) => {
                tracing::warn!(%error, "outbox relay round failed");
                FAILURE_WAIT
            }
        }
    })
    .await;
}
