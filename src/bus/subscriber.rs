//! A subscriber of the PostgreSQL bus: a named competing consumer with its
//! cursor in the bus and its handled ids and parked events in its own
//! service's database. One round claims the cursor (SKIP LOCKED: another
//! replica holding it means this one waits its turn), reads the events
//! after it and handles those of the types it wants, each in one
//! transaction of the service's database that also records the event id —
//! so a redelivered event is recognised and skipped. A failing event is
//! retried with exponential backoff and full jitter, then parked for the
//! jobs monitor, and the cursor moves past it. The cursor advances only
//! when the round ends, so a subscriber killed mid-batch loses nothing: the
//! next round sees the same events and skips those already handled.
//!
//! [`Subscriber::run`] keeps a subscriber going: a LISTEN connection to the
//! bus wakes it when the log grows, a slow poll covers a lost notification,
//! and a full batch is followed by the next one at once.

use crate::data::statement::Statement;
use std::{
    collections::BTreeSet,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;
use tracing::Instrument;

use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Bytea, Integer, Text, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use prost::Message;

use super::{Bus, BusError, postgres};
use crate::{
    data::{db::Database, outbox::Event},
    events::v1::Envelope,
    observability::telemetry,
};

/// Events one round takes at most.
const BATCH: i64 = 1_000;
/// The safety net under LISTEN: a round this often even when nothing woke
/// the subscriber (a notification lost with its connection, say).
const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// How long a subscriber waits after a failed round (a database away).
const FAILURE_WAIT: Duration = Duration::from_secs(1);
/// The channel the event log's trigger notifies.
const CHANNEL: &str = "safra_events";

/// Why handling an event failed (retried, then parked with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl From<diesel::result::Error> for HandlerError {
    fn from(error: diesel::result::Error) -> Self {
        HandlerError(error.to_string())
    }
}

/// The future a [`Handler`] returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// What a handler learned from other services before its transaction
/// opened ([`Handler::prepare`]); empty for most handlers.
#[derive(Default)]
pub struct Prepared(Option<Box<dyn std::any::Any + Send + Sync>>);

impl Prepared {
    /// Holds `value` for [`Handler::handle`].
    #[must_use]
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Self {
        Self(Some(Box::new(value)))
    }

    /// What [`Handler::prepare`] kept, if it is a `T`.
    #[must_use]
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.as_ref()?.downcast_ref()
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Prepared(..)"
        } else {
            "Prepared(none)"
        })
    }
}

/// The future [`Handler::prepare`] returns.
pub type PrepareFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Prepared, HandlerError>> + Send + 'a>>;

/// What a subscriber does with one event: first what it needs from other
/// services, with no transaction open ([`Handler::prepare`]), then its
/// effect, inside the transaction of its service's database that records
/// the event as handled ([`Handler::handle`]).
pub trait Handler: Send + Sync {
    /// Gathers what handling `envelope` needs from other services, before
    /// any transaction or pooled connection is taken, so that no
    /// transaction waits on a call. Nothing by default. It may run for an
    /// event handled before (the transaction then skips it), so it only
    /// reads.
    fn prepare<'a>(&'a self, envelope: &'a Envelope) -> PrepareFuture<'a> {
        let _ = envelope;
        Box::pin(std::future::ready(Ok(Prepared::default())))
    }

    /// Applies `envelope` through `conn`, with what [`Handler::prepare`]
    /// gathered for it.
    fn handle<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        prepared: &'a Prepared,
    ) -> HandlerFuture<'a>;

    /// Whether several events may be handled in one transaction: true for
    /// handlers that only touch their own database and prepare nothing.
    fn batches(&self) -> bool {
        false
    }

    /// Applies `envelopes` (in log order, none handled before) through
    /// `conn`, inside one transaction; only called when [`Handler::batches`]
    /// says so. By default one [`Handler::handle`] after another, each in
    /// a span of its own that continues the event's trace; a handler can
    /// do better (one statement for the whole batch, say).
    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelopes: &'a [&'a Envelope],
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            for envelope in envelopes {
                let span = tracing::info_span!(
                    "handle event",
                    otel.kind = "consumer",
                    event.id = %envelope.id,
                    event.r#type = %envelope.r#type,
                );
                telemetry::follow_traceparent(&span, &envelope.traceparent);
                self.handle(conn, envelope, &Prepared::default())
                    .instrument(span)
                    .await?;
            }
            Ok(())
        })
    }
}

/// The payload of `envelope` as a `P`.
///
/// # Errors
/// A [`HandlerError`] when the envelope holds another type or its payload
/// does not decode (retrying cannot help; the event is parked).
pub fn payload<P: Event + Default>(envelope: &Envelope) -> Result<P, HandlerError> {
    if envelope.r#type != P::TYPE {
        return Err(HandlerError(format!(
            "expected {}, got {}",
            P::TYPE,
            envelope.r#type
        )));
    }
    let any = envelope
        .payload
        .as_ref()
        .ok_or_else(|| HandlerError(format!("event {} has no payload", envelope.id)))?;
    P::decode(any.value.as_slice())
        .map_err(|error| HandlerError(format!("event {}: {}: {error}", envelope.id, P::TYPE)))
}

/// Retries before an event is parked, and their spacing.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Attempts in all.
    pub attempts: u32,
    /// The backoff before the first retry; it doubles each time.
    pub base: Duration,
    /// The longest backoff.
    pub max: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Whether this replica held the cursor (another one may have).
    pub claimed: bool,
    /// Events handled now.
    pub handled: usize,
    /// Events handled before (a redelivery), skipped.
    pub duplicates: usize,
    /// Events of types this subscriber does not want.
    pub ignored: usize,
    /// Events parked after their last attempt.
    pub parked: usize,
    /// Whether the batch came full (more may be waiting).
    pub more: bool,
}

impl Round {
    /// Events the round went through, of any outcome.
    #[must_use]
    pub fn seen(&self) -> usize {
        self.handled + self.duplicates + self.ignored + self.parked
    }
}

/// What a subscriber is doing right now, in this replica, for the jobs
/// monitor (the durable figures come from the database).
#[derive(Debug, Default)]
pub struct Activity {
    /// Events being handled.
    pub in_flight: AtomicI64,
    /// Events waiting between a failed attempt and the next.
    pub retrying: AtomicI64,
    /// Failed attempts retried since the process started.
    pub retries_total: AtomicU64,
    /// `occurred_at` (Unix milliseconds) of the event being handled; 0 when
    /// idle.
    pub handling_since: AtomicI64,
}

/// A named subscriber.
#[derive(Clone)]
pub struct Subscriber {
    name: String,
    types: BTreeSet<String>,
    handler: Arc<dyn Handler>,
    service: Database,
    retries: Retries,
    after_handling: Option<Arc<Notify>>,
    activity: Arc<Activity>,
    /// Whether its cursor row exists (made once per process).
    cursor_made: Arc<AtomicBool>,
    /// How far this replica has looked through the log past its cursor and
    /// found nothing it follows (so the next look starts there), and the
    /// stored cursor at the time: a cursor moved back below that (an
    /// operator replaying events) makes the look start at the cursor again.
    looked_to: Arc<AtomicI64>,
    looked_from: Arc<AtomicI64>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.name)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

#[derive(QueryableByName)]
struct Cursor {
    #[diesel(sql_type = BigInt)]
    position: i64,
}

/// An event id recorded as handled by a batch.
#[derive(QueryableByName)]
struct Fresh {
    #[diesel(sql_type = SqlUuid)]
    event_id: uuid::Uuid,
}

/// What a look at the log without a lock found.
#[derive(QueryableByName)]
struct Look {
    /// The stored cursor.
    #[diesel(sql_type = BigInt)]
    cursor: i64,
    /// The first event it follows past the cursor and what this replica
    /// already looked through.
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    next: Option<i64>,
    /// The log's last position: every event up to it is committed, since
    /// positions are given in commit order.
    #[diesel(sql_type = BigInt)]
    last: i64,
}

/// How far a cursor may lag behind events it does not follow before the
/// move past them is written: until then only this replica's memory holds
/// it (a look starts there), and another replica passes over at most this
/// many events again.
const LAG_BEFORE_WRITING: i64 = 4096;

impl Subscriber {
    /// `name` handles the event `types` with `handler`, recording them in
    /// `service` (its own database).
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        types: impl IntoIterator<Item = impl Into<String>>,
        handler: Arc<dyn Handler>,
        service: Database,
        retries: Retries,
    ) -> Self {
        Self {
            name: name.into(),
            types: types.into_iter().map(Into::into).collect(),
            handler,
            service,
            retries,
            after_handling: None,
            activity: Arc::new(Activity::default()),
            cursor_made: Arc::new(AtomicBool::new(false)),
            looked_to: Arc::new(AtomicI64::new(0)),
            looked_from: Arc::new(AtomicI64::new(0)),
        }
    }

    /// What it is doing right now in this replica.
    #[must_use]
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// The database it records handled and parked events in.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.service
    }

    /// Rings `bell` after every round that handled something, once those
    /// effects are committed (a worker that carries them on starts at once).
    #[must_use]
    pub fn waking(mut self, bell: Arc<Notify>) -> Self {
        self.after_handling = Some(bell);
        self
    }

    /// The subscriber's name (its cursor, its queue).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the worker `waking` named that something was handled.
    pub(super) fn ring(&self) {
        if let Some(bell) = &self.after_handling {
            bell.notify_one();
        }
    }

    /// The event types it handles.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(String::as_str)
    }

    /// Handles events from `bus` until `stop` resolves.
    pub async fn run(self, bus: Bus, stop: impl Future<Output = ()>) {
        match bus {
            Bus::Postgres(bus) => self.run_on_log(bus, stop).await,
            Bus::Rabbit(bus) => bus.run(self, stop).await,
        }
    }

    /// On the PostgreSQL log: woken by its notifications, rounds back to
    /// back while batches come full, a fallback poll when all is quiet, a
    /// pause after a failure.
    async fn run_on_log(self, bus: postgres::PgBus, stop: impl Future<Output = ()>) {
        let db = bus.database().clone();
        postgres::run_woken(db, CHANNEL, stop, || async {
            let outcome = self.round_on(&bus).await;
            if outcome.as_ref().is_ok_and(|round| round.handled > 0) {
                self.ring();
            }
            match outcome {
                Ok(round) if round.more => Duration::ZERO,
                Ok(_) => FALLBACK_POLL,
                Err(error) => {
                    tracing::warn!(subscriber = %self.name, %error, "subscriber round failed");
                    FAILURE_WAIT
                }
            }
        })
        .await;
    }

    async fn round_on(&self, bus: &postgres::PgBus) -> Result<Round, BusError> {
        let mut conn = bus.database().connection().await?;
        self.round(&mut conn, BATCH).await
    }

    /// One round over up to `limit` events after the cursor, holding the
    /// cursor's row lock in `bus` until the round ends. A look without a
    /// lock or a write comes first: when nothing it follows arrived, the
    /// round ends there (no transaction, nothing written), and the cursor
    /// moves past what it passed over only once that is far behind.
    ///
    /// # Errors
    /// A database; the cursor then stays where it was.
    pub async fn round(&self, bus: &mut AsyncPgConnection, limit: i64) -> Result<Round, BusError> {
        if !AtomicBool::load(&self.cursor_made, Ordering::Relaxed) {
            Statement::new(
                "INSERT INTO subscriber_cursors (subscriber) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(&self.name)
            .execute(bus)
            .await?;
            self.cursor_made.store(true, Ordering::Relaxed);
        }
        let types: Vec<&str> = self.types.iter().map(String::as_str).collect();
        let look: Vec<Look> = Statement::new(
            "SELECT c.position AS cursor, \
                    (SELECT e.position FROM event_log e \
                     WHERE e.position > CASE WHEN c.position >= $2 THEN greatest(c.position, $3) \
                                                 ELSE c.position END \
                       AND e.event_type = ANY($4) \
                     ORDER BY e.position LIMIT 1) AS next, \
                    coalesce((SELECT max(position) FROM event_log), 0) AS last \
             FROM subscriber_cursors c WHERE c.subscriber = $1",
        )
        .bind::<Text, _>(&self.name)
        .bind::<BigInt, _>(AtomicI64::load(&self.looked_from, Ordering::Relaxed))
        .bind::<BigInt, _>(AtomicI64::load(&self.looked_to, Ordering::Relaxed))
        .bind::<Array<Text>, _>(&types)
        .load(bus)
        .await?;
        let Some(look) = <[Look]>::first(&look) else {
            return Ok(Round::default());
        };
        if look.next.is_none() {
            self.looked_from.store(look.cursor, Ordering::Relaxed);
            self.looked_to.store(look.last, Ordering::Relaxed);
            if look.last - look.cursor < LAG_BEFORE_WRITING {
                return Ok(Round::default());
            }
        }
        let last = look.last;
        bus.transaction(async move |bus| {
            let cursor: Vec<Cursor> = Statement::new(
                "SELECT position FROM subscriber_cursors WHERE subscriber = $1 \
                 FOR UPDATE SKIP LOCKED",
            )
            .bind::<Text, _>(&self.name)
            .load(bus)
            .await?;
            let Some(cursor) = <[Cursor]>::first(&cursor) else {
                return Ok(Round::default());
            };
            let mut round = Round {
                claimed: true,
                ..Round::default()
            };
            let events = postgres::following(bus, cursor.position, last, &types, limit).await?;
            let full = i64::try_from(events.len()).unwrap_or(i64::MAX) >= limit;
            // The whole batch in one transaction when the handler allows it;
            // if any event fails, one by one (retries, parking) as always.
            let batched = if self.handler.batches() && events.len() > 1 {
                self.handle_batch(&events).await.ok()
            } else {
                None
            };
            if let Some((handled, duplicates)) = batched {
                round.handled += handled;
                round.duplicates += duplicates;
            } else {
                for event in &events {
                    match self
                        .handle_one(event.event_id, &event.event_type, &event.envelope)
                        .await?
                    {
                        Outcome::Handled => round.handled += 1,
                        Outcome::Duplicate => round.duplicates += 1,
                        Outcome::Parked => round.parked += 1,
                        Outcome::Ignored => round.ignored += 1,
                    }
                }
            }
            // A full batch ends at its last event; otherwise everything up to
            // `last` has been looked through.
            let moved_to = match events.last() {
                Some(event) if full => event.position,
                _ => last,
            };
            if full {
                round.more = true;
            }
            if moved_to > cursor.position {
                Statement::new("UPDATE subscriber_cursors SET position = $2 WHERE subscriber = $1")
                    .bind::<Text, _>(&self.name)
                    .bind::<BigInt, _>(moved_to)
                    .execute(bus)
                    .await?;
            }
            Ok(round)
        })
        .await
    }

    /// Handles one event (its id, type and encoded envelope, from either
    /// transport) with retries; parks it after the last attempt.
    ///
    /// # Errors
    /// [`BusError::Envelope`] when it does not decode; a database error
    /// when even parking failed (the transport delivers it again).
    pub async fn handle_one(
        &self,
        event_id: uuid::Uuid,
        event_type: &str,
        encoded: &[u8],
    ) -> Result<Outcome, BusError> {
        let envelope = Envelope::decode(encoded).map_err(|_| BusError::Envelope(event_id))?;
        if !self.types.contains(event_type) {
            return Ok(Outcome::Ignored);
        }
        let occurred = envelope.occurred_at.as_ref().map_or(0, |time| {
            time.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(time.nanos / 1_000_000))
        });
        self.activity
            .handling_since
            .store(occurred, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = self
            .attempts(event_id, event_type, encoded, &envelope)
            .await;
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.activity.handling_since.store(0, Ordering::Relaxed);
        outcome
    }

    async fn attempts(
        &self,
        event_id: uuid::Uuid,
        event_type: &str,
        encoded: &[u8],
        envelope: &Envelope,
    ) -> Result<Outcome, BusError> {
        let mut last_error = String::new();
        for attempt in 1..=self.retries.attempts.max(1) {
            match self.attempt(event_id, event_type, envelope).await {
                Ok(outcome) => return Ok(outcome),
                Err(error) => last_error = error.0,
            }
            if attempt < self.retries.attempts {
                self.activity.retrying.fetch_add(1, Ordering::Relaxed);
                self.activity.retries_total.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(self.backoff(attempt)).await;
                self.activity.retrying.fetch_sub(1, Ordering::Relaxed);
            }
        }
        tracing::warn!(subscriber = %self.name, event = %event_id, error = %last_error, "event parked");
        let mut conn = self.service.connection().await?;
        Statement::new(
            "INSERT INTO parked_events (subscriber, event_id, event_type, envelope, attempts, last_error) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (subscriber, event_id) DO UPDATE \
             SET attempts = parked_events.attempts + excluded.attempts, last_error = excluded.last_error",
        )
        .bind::<Text, _>(&self.name)
        .bind::<SqlUuid, _>(event_id)
        .bind::<Text, _>(event_type)
        .bind::<Bytea, _>(encoded)
        .bind::<Integer, _>(i32::try_from(self.retries.attempts).unwrap_or(i32::MAX))
        .bind::<Text, _>(&last_error)
        .execute(&mut conn)
        .await?;
        Ok(Outcome::Parked)
    }

    /// Whether its handler takes several events in one transaction.
    #[must_use]
    pub fn handles_batches(&self) -> bool {
        self.handler.batches()
    }

    /// Whether it follows events of `event_type`.
    #[must_use]
    pub fn follows(&self, event_type: &str) -> bool {
        self.types.contains(event_type)
    }

    /// Handles `events` (all of types it follows, in log order) in one
    /// transaction of its database: their ids recorded as handled in one
    /// statement, then the effect of each not handled before. Returns how
    /// many were handled now and how many before.
    ///
    /// # Errors
    /// The first failure (nothing of the batch is then committed).
    pub(super) async fn handle_batch(
        &self,
        events: &[postgres::Logged],
    ) -> Result<(usize, usize), HandlerError> {
        let envelopes = events
            .iter()
            .map(|event| Envelope::decode(event.envelope.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| HandlerError(format!("an envelope does not decode: {error}")))?;
        let mut conn = self
            .service
            .connection()
            .await
            .map_err(|error| HandlerError(error.to_string()))?;
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        self.activity.in_flight.fetch_add(count, Ordering::Relaxed);
        let handler = self.handler.clone();
        let name = self.name.clone();
        let outcome = conn
            .transaction(async move |conn| {
                let ids: Vec<uuid::Uuid> = events.iter().map(|event| event.event_id).collect();
                let fresh: Vec<Fresh> = Statement::new(
                    "INSERT INTO processed_events (subscriber, event_id) \
                     SELECT $1, id FROM unnest($2::uuid[]) AS id \
                     ON CONFLICT DO NOTHING RETURNING event_id",
                )
                .bind::<Text, _>(&name)
                .bind::<Array<SqlUuid>, _>(&ids)
                .load(conn)
                .await?;
                let fresh: BTreeSet<uuid::Uuid> =
                    fresh.into_iter().map(|row| row.event_id).collect();
                let todo: Vec<&Envelope> = events
                    .iter()
                    .zip(&envelopes)
                    .filter(|(event, _)| fresh.contains(&event.event_id))
                    .map(|(_, envelope)| envelope)
                    .collect();
                let span = tracing::info_span!(
                    "handle events",
                    subscriber = %name,
                    events = todo.len(),
                );
                handler.handle_batch(conn, &todo).instrument(span).await?;
                Ok::<_, HandlerError>((todo.len(), events.len() - todo.len()))
            })
            .await;
        self.activity.in_flight.fetch_sub(count, Ordering::Relaxed);
        outcome
    }

    /// One attempt: what the handler needs from other services first, with
    /// nothing of the database held; then the handled id and the effect in
    /// one transaction.
    async fn attempt(
        &self,
        event_id: uuid::Uuid,
        event_type: &str,
        envelope: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        // The handling continues the trace of whatever caused the event.
        let span = tracing::info_span!(
            "handle event",
            otel.kind = "consumer",
            subscriber = %self.name,
            event.id = %event_id,
            event.r#type = %event_type,
        );
        telemetry::follow_traceparent(&span, &envelope.traceparent);
        let prepared = match self
            .handler
            .prepare(envelope)
            .instrument(span.clone())
            .await
        {
            Ok(prepared) => prepared,
            // An event handled before is skipped, whatever its preparation
            // now meets (its offering gone, say), rather than parked.
            Err(error) => {
                return match self.handled_before(event_id).await {
                    Ok(true) => Ok(Outcome::Duplicate),
                    _ => Err(error),
                };
            }
        };
        let mut conn = self
            .service
            .connection()
            .await
            .map_err(|error| HandlerError(error.to_string()))?;
        let handler = self.handler.clone();
        let name = self.name.clone();
        let prepared = &prepared;
        conn.transaction(async move |conn| {
            let first = Statement::new(
                "INSERT INTO processed_events (subscriber, event_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(&name)
            .bind::<SqlUuid, _>(event_id)
            .execute(conn)
            .await?;
            if first == 0 {
                return Ok(Outcome::Duplicate);
            }
            handler.handle(conn, envelope, prepared).await?;
            Ok(Outcome::Handled)
        })
        .instrument(span)
        .await
    }

    /// Whether this subscriber handled `event_id` already.
    async fn handled_before(&self, event_id: uuid::Uuid) -> Result<bool, HandlerError> {
        let mut conn = self
            .service
            .connection()
            .await
            .map_err(|error| HandlerError(error.to_string()))?;
        let found: Vec<Fresh> = Statement::new(
            "SELECT event_id FROM processed_events WHERE subscriber = $1 AND event_id = $2",
        )
        .bind::<Text, _>(&self.name)
        .bind::<SqlUuid, _>(event_id)
        .load(&mut conn)
        .await?;
        Ok(!found.is_empty())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .retries
            .base
            .saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.retries.max);
        // Full jitter, so replicas retrying together spread out.
        let millis = u64::try_from(exponential.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Duration::from_millis(u64::from(rand_below(millis)))
    }
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled now.
    Handled,
    /// Handled before: skipped.
    Duplicate,
    /// Failed every attempt: parked.
    Parked,
    /// Not a type this subscriber handles.
    Ignored,
}

/// A number below `bound`, from the clock's nanoseconds (jitter needs
/// spread, not secrecy).
fn rand_below(bound: u64) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    u32::try_from(u64::from(nanos) % bound.max(1)).unwrap_or(0)
}
