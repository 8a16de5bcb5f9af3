//! The jobs monitor of one service (`safra.jobs.v1.JobsService`, admin
//! only): its subscribers' backlog, lag, handled rate, retries and parked
//! events, its outbox, and the retry or discard of a parked event. The
//! durable figures are read from the databases (handled ids and parked
//! events in the service's, the log and cursors in the bus's, queue depths
//! from the broker), so every replica answers alike; what is in flight or
//! retrying right now is this replica's. The same figures are Prometheus
//! metrics ([`JobsMetrics`]), refreshed every few seconds. The edge merges
//! the answers of every service.

use crate::data::statement::Statement;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::RunQueryDsl;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use prost::Message;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use super::{
    Bus,
    subscriber::{Outcome, Subscriber},
};
use crate::{
    contract::status::{self, Violation},
    data::{
        db::{Database, DbError},
        paging::{self, Keyset, timestamp},
    },
    events::v1::Envelope,
    jobs::v1::{
        DiscardParkedEventRequest, DiscardParkedEventResponse, ListOutboxesRequest,
        ListOutboxesResponse, ListParkedEventsRequest, ListParkedEventsResponse,
        ListSubscriptionsRequest, ListSubscriptionsResponse, Outbox, ParkedEvent,
        RetryParkedEventRequest, RetryParkedEventResponse, Subscription,
        jobs_service_server::JobsService,
    },
    r#type::v1::ErrorReason,
};

/// Backlog entries counted one by one; past this many the backlog is
/// estimated from positions.
const BACKLOG_COUNTED: i64 = 100_000;

/// How often the metrics are refreshed.
const METRICS_EVERY: Duration = Duration::from_secs(5);

/// One service's jobs: its outbox and subscribers, on its bus.
#[derive(Clone)]
pub struct Jobs {
    service: String,
    db: Database,
    bus: Option<Bus>,
    subscribers: Vec<Subscriber>,
    /// After how long a retired cursor stops holding the event log.
    idle_cursor: Duration,
    /// Each subscriber's handled total as read over the last minute or so,
    /// for its rate.
    samples: Arc<Mutex<HashMap<String, Samples>>>,
}

/// Handled totals as read, oldest first, with when.
type Samples = VecDeque<(Instant, i64)>;

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("service", &self.service)
            .field("subscribers", &self.subscribers)
            .finish_non_exhaustive()
    }
}

#[derive(QueryableByName)]
struct Handled {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    parked: i64,
}

#[derive(QueryableByName)]
struct RetiredCursor {
    #[diesel(sql_type = Text)]
    subscriber: String,
    #[diesel(sql_type = BigInt)]
    waiting: i64,
    #[diesel(sql_type = Timestamptz)]
    update_time: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Backlog {
    #[diesel(sql_type = BigInt)]
    waiting: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    oldest: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = BigInt)]
    unpublished: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    oldest: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    published_last_minute: i64,
}

#[derive(QueryableByName)]
struct ParkedRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    subscriber: String,
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Bytea)]
    envelope: Vec<u8>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    create_time: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    update_time: DateTime<Utc>,
}

fn unavailable(error: &dyn std::fmt::Display) -> Status {
    tracing::warn!(%error, "jobs monitor query failed");
    Status::from(DbError::Connect(error.to_string()))
}

fn duration(seconds: f64) -> prost_types::Duration {
    let seconds = seconds.max(0.0);
    prost_types::Duration {
        // Whole seconds and the rest in nanoseconds; lags are far below i64.
        #[allow(clippy::cast_possible_truncation, reason = "bounded above")]
        seconds: seconds.trunc() as i64,
        #[allow(clippy::cast_possible_truncation, reason = "below one second")]
        nanos: (seconds.fract() * 1e9) as i32,
    }
}

fn age(since: Option<DateTime<Utc>>) -> f64 {
    since.map_or(0.0, |time| {
        #[allow(clippy::cast_precision_loss, reason = "milliseconds of lag")]
        let millis = (Utc::now() - time).num_milliseconds().max(0) as f64;
        millis / 1000.0
    })
}

/// An atomic's value (`load` itself would be diesel's here).
fn atomic(value: &std::sync::atomic::AtomicI64) -> i64 {
    std::sync::atomic::AtomicI64::load(value, Ordering::Relaxed)
}

fn count(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl Jobs {
    /// The jobs of `service`: its outbox in `db`, its `subscribers` on `bus`.
    #[must_use]
    pub fn new(
        service: impl Into<String>,
        db: Database,
        bus: Option<Bus>,
        subscribers: Vec<Subscriber>,
    ) -> Self {
        Self {
            service: service.into(),
            db,
            bus,
            subscribers,
            idle_cursor: super::retention::RetentionSettings::default().idle_cursor,
            samples: Arc::default(),
        }
    }

    /// The monitor, telling retired cursors idle for `idle_cursor` (as
    /// retention judges them) from those that still hold the log.
    #[must_use]
    pub fn with_idle_cursor(mut self, idle_cursor: Duration) -> Self {
        self.idle_cursor = idle_cursor;
        self
    }

    /// Events per second over about the last minute, from the totals read
    /// before (the metrics refresh reads them every few seconds).
    fn rate(&self, name: &str, total: i64) -> f64 {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = samples.entry(name.to_owned()).or_default();
        mine.push_back((now, total));
        // Keep one sample a minute old or older, and the ones after it.
        while mine
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= Duration::from_secs(60))
        {
            mine.pop_front();
        }
        match mine.front() {
            Some((at, then)) if *at < now => {
                #[allow(clippy::cast_precision_loss, reason = "events per second")]
                let handled = (total - then).max(0) as f64;
                handled / now.duration_since(*at).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Every subscriber's figures, by name.
    ///
    /// # Errors
    /// A database the figures come from is away.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, Status> {
        let mut all = Vec::new();
        for subscriber in &self.subscribers {
            all.push(self.subscription(subscriber).await?);
        }
        all.extend(self.retired().await?);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn subscription(&self, subscriber: &Subscriber) -> Result<Subscription, Status> {
        let name = subscriber.name().to_owned();
        let types: Vec<String> = subscriber.types().map(str::to_owned).collect();
        let handled: Handled = {
            let mut conn = subscriber
                .database()
                .connection()
                .await
                .map_err(|error| unavailable(&error))?;
            let rows: Vec<Handled> = Statement::new(
                "SELECT coalesce((SELECT handled FROM subscriber_totals WHERE subscriber = $1), 0) \
                          AS total, \
                        (SELECT last_handled FROM subscriber_totals WHERE subscriber = $1) AS last, \
                        (SELECT count(*) FROM parked_events WHERE subscriber = $1) AS parked",
            )
            .bind::<Text, _>(&name)
            .load(&mut conn)
            .await
            .map_err(|error| unavailable(&error))?;
            rows.into_iter()
                .next()
                .ok_or_else(|| status::internal(&"no row of counts"))?
        };
        let activity = subscriber.activity();
        let (backlog, lag) = match &self.bus {
            Some(Bus::Postgres(bus)) => {
                let mut conn = bus
                    .database()
                    .connection()
                    .await
                    .map_err(|error| unavailable(&error))?;
                // Counted in log order up to a bound, so the plan is a plain
                // walk of the index from the cursor (no parallel workers to
                // launch every refresh) and a far-behind subscriber costs
                // no more than BACKLOG_COUNTED rows; past it, the backlog is
                // the log's length after the cursor, every type included.
                let rows: Vec<Backlog> = Statement::new(
                    "WITH cursor AS (SELECT coalesce((SELECT position FROM subscriber_cursors \
                                                      WHERE subscriber = $1), 0) AS position), \
                          counted AS (SELECT count(*) AS waiting, min(create_time) AS oldest \
                                      FROM (SELECT e.create_time FROM event_log e \
                                            WHERE e.position > (SELECT position FROM cursor) \
                                              AND e.event_type = ANY($2) \
                                            ORDER BY e.position LIMIT $3) AS first) \
                     SELECT CASE WHEN counted.waiting < $3 THEN counted.waiting \
                                 ELSE greatest(coalesce((SELECT max(position) FROM event_log), 0) \
                                               - (SELECT position FROM cursor), counted.waiting) \
                            END AS waiting, \
                            counted.oldest \
                     FROM counted",
                )
                .bind::<Text, _>(&name)
                .bind::<Array<Text>, _>(&types)
                .bind::<BigInt, _>(BACKLOG_COUNTED)
                .load(&mut conn)
                .await
                .map_err(|error| unavailable(&error))?;
                let backlog = rows.into_iter().next();
                (
                    backlog.as_ref().map_or(0, |row| row.waiting),
                    age(backlog.and_then(|row| row.oldest)),
                )
            }
            Some(Bus::Rabbit(bus)) => {
                let waiting = match bus.queue_depth(&name).await {
                    Ok(depth) => i64::from(depth),
                    Err(error) => {
                        tracing::warn!(subscriber = %name, %error, "queue depth unknown");
                        0
                    }
                };
                // The broker does not tell an event's age; the event being
                // handled now is the oldest one not yet done.
                let since = atomic(&activity.handling_since);
                let lag = if waiting > 0 && since > 0 {
                    age(DateTime::from_timestamp_millis(since))
                } else {
                    0.0
                };
                (waiting, lag)
            }
            None => (0, 0.0),
        };
        let per_second = self.rate(&name, handled.total);
        Ok(Subscription {
            service: self.service.clone(),
            event_types: types,
            backlog: count(backlog),
            in_flight: count(atomic(&activity.in_flight)),
            retrying: count(atomic(&activity.retrying)),
            parked: count(handled.parked),
            lag: Some(duration(lag)),
            last_handled_time: handled.last.map(timestamp),
            transport: self.bus.as_ref().map_or("none", Bus::transport).to_owned(),
            handled_total: handled.total,
            handled_per_second: per_second,
            retries_total: i64::try_from(std::sync::atomic::AtomicU64::load(
                &activity.retries_total,
                Ordering::Relaxed,
            ))
            .unwrap_or(i64::MAX),
            name,
            retired: false,
            holds_log: true,
        })
    }

    /// Cursors on the PostgreSQL event log of subscribers no longer in the
    /// mesh's list: what they have not read, and whether they still hold
    /// the log back.
    async fn retired(&self) -> Result<Vec<Subscription>, Status> {
        let Some(Bus::Postgres(bus)) = &self.bus else {
            return Ok(Vec::new());
        };
        let mut conn = bus
            .database()
            .connection()
            .await
            .map_err(|error| unavailable(&error))?;
        // The mesh's subscribers and this service's own (a test's, say).
        let mut known = super::subscriptions::names();
        known.extend(self.subscribers.iter().map(Subscriber::name));
        // What it has not read: the log's last position minus its own (the
        // log's positions are dense enough for a figure).
        let rows: Vec<RetiredCursor> = Statement::new(
            "SELECT c.subscriber, \
                    greatest(coalesce((SELECT max(position) FROM event_log), 0) - c.position, 0) \
                      AS waiting, \
                    c.update_time \
             FROM subscriber_cursors c WHERE c.subscriber <> ALL($1) ORDER BY c.subscriber",
        )
        .bind::<Array<Text>, _>(&known)
        .load(&mut conn)
        .await
        .map_err(|error| unavailable(&error))?;
        let idle = chrono::Duration::from_std(self.idle_cursor).unwrap_or(chrono::Duration::MAX);
        Ok(rows
            .into_iter()
            .map(|row| Subscription {
                name: row.subscriber,
                transport: "postgres".to_owned(),
                backlog: count(row.waiting),
                holds_log: Utc::now() - row.update_time < idle,
                retired: true,
                last_handled_time: Some(timestamp(row.update_time)),
                ..Subscription::default()
            })
            .collect())
    }

    /// This service's outbox.
    ///
    /// # Errors
    /// The database is away.
    pub async fn outbox(&self) -> Result<Outbox, Status> {
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(|error| unavailable(&error))?;
        let rows: Vec<OutboxRow> = Statement::new(
            "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished, \
                    (SELECT min(create_time) FROM outbox WHERE published_at IS NULL) AS oldest, \
                    (SELECT count(*) FROM outbox WHERE published_at > now() - interval '1 minute') \
                      AS published_last_minute",
        )
        .load(&mut conn)
        .await
        .map_err(|error| unavailable(&error))?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| status::internal(&"no row of counts"))?;
        Ok(Outbox {
            service: self.service.clone(),
            unpublished: count(row.unpublished),
            oldest_unpublished_age: Some(duration(age(row.oldest))),
            published_last_minute: row.published_last_minute,
        })
    }

    fn subscriber(&self, name: &str) -> Option<&Subscriber> {
        self.subscribers
            .iter()
            .find(|subscriber| subscriber.name() == name)
    }

    async fn parked(&self, id: Uuid) -> Result<ParkedRow, Status> {
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(|error| unavailable(&error))?;
        let rows: Vec<ParkedRow> = Statement::new(
            "SELECT id, subscriber, event_id, event_type, envelope, attempts, last_error, \
                    create_time, update_time FROM parked_events WHERE id = $1",
        )
        .bind::<SqlUuid, _>(id)
        .load(&mut conn)
        .await
        .map_err(|error| unavailable(&error))?;
        rows.into_iter()
            .next()
            .filter(|row| self.subscriber(&row.subscriber).is_some())
            .ok_or_else(|| {
                status::with_metadata(
                    Code::NotFound,
                    ErrorReason::ParkedEventNotFound,
                    "no such parked event",
                    &[("parked_event_id", id.to_string())],
                    Vec::new(),
                )
            })
    }

    async fn delete_parked(&self, id: Uuid) -> Result<(), Status> {
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(|error| unavailable(&error))?;
        Statement::new("DELETE FROM parked_events WHERE id = $1")
            .bind::<SqlUuid, _>(id)
            .execute(&mut conn)
            .await
            .map_err(|error| unavailable(&error))?;
        Ok(())
    }
}

fn parked_message(row: &ParkedRow) -> ParkedEvent {
    ParkedEvent {
        id: row.id.to_string(),
        subscription: row.subscriber.clone(),
        event: Envelope::decode(row.envelope.as_slice()).ok().or_else(|| {
            Some(Envelope {
                id: row.event_id.to_string(),
                r#type: row.event_type.clone(),
                ..Envelope::default()
            })
        }),
        attempts: row.attempts,
        last_error: row.last_error.clone().unwrap_or_default(),
        first_failure_time: Some(timestamp(row.create_time)),
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn parked_id(value: &str) -> Result<Uuid, Status> {
    // The contract stage checked the format.
    Uuid::parse_str(value).map_err(|_| {
        status::invalid_argument(&[Violation {
            field: "parked_event_id".into(),
            description: "must be a UUID".into(),
            reason: "INVALID",
        }])
    })
}

#[tonic::async_trait]
impl JobsService for Jobs {
    async fn list_subscriptions(
        &self,
        _request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        // A service has a handful of subscribers: one page holds them.
        Ok(Response::new(ListSubscriptionsResponse {
            subscriptions: self.subscriptions().await?,
            next_page_token: String::new(),
        }))
    }

    async fn list_outboxes(
        &self,
        _request: Request<ListOutboxesRequest>,
    ) -> Result<Response<ListOutboxesResponse>, Status> {
        Ok(Response::new(ListOutboxesResponse {
            outboxes: vec![self.outbox().await?],
            next_page_token: String::new(),
        }))
    }

    async fn list_parked_events(
        &self,
        request: Request<ListParkedEventsRequest>,
    ) -> Result<Response<ListParkedEventsResponse>, Status> {
        let body = request.into_inner();
        let size = paging::page_size(body.page_size);
        let after = paging::decode(&body.page_token).map_err(|_| {
            status::invalid_argument(&[Violation {
                field: "page_token".into(),
                description: "the page token is not valid".into(),
                reason: "INVALID",
            }])
        })?;
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(|error| unavailable(&error))?;
        let far = Keyset {
            time: DateTime::<Utc>::MAX_UTC,
            id: Uuid::max(),
        };
        let after = after.unwrap_or(far);
        let mine: Vec<String> = self
            .subscribers
            .iter()
            .map(|subscriber| subscriber.name().to_owned())
            .filter(|name| body.subscription.is_empty() || *name == body.subscription)
            .collect();
        let mut rows: Vec<ParkedRow> = Statement::new(
            "SELECT id, subscriber, event_id, event_type, envelope, attempts, last_error, \
                    create_time, update_time FROM parked_events \
             WHERE subscriber = ANY($1) AND (create_time, id) < ($2, $3) \
             ORDER BY create_time DESC, id DESC LIMIT $4",
        )
        .bind::<Array<Text>, _>(&mine)
        .bind::<Timestamptz, _>(after.time)
        .bind::<SqlUuid, _>(after.id)
        .bind::<BigInt, _>(i64::try_from(size + 1).unwrap_or(i64::MAX))
        .load(&mut conn)
        .await
        .map_err(|error| unavailable(&error))?;
        let next_page_token = paging::next_page(&mut rows, size, |row| Keyset {
            time: row.create_time,
            id: row.id,
        });
        Ok(Response::new(ListParkedEventsResponse {
            parked_events: rows.iter().map(parked_message).collect(),
            next_page_token,
        }))
    }

    async fn retry_parked_event(
        &self,
        request: Request<RetryParkedEventRequest>,
    ) -> Result<Response<RetryParkedEventResponse>, Status> {
        let id = parked_id(&request.get_ref().parked_event_id)?;
        let row = self.parked(id).await?;
        let Some(subscriber) = self.subscriber(&row.subscriber).cloned() else {
            return Err(status::internal(&"a parked event of no subscriber"));
        };
        // Handled again now with fresh attempts, as its subscriber would; the
        // handled id keeps it harmless. Only once it is handled does the
        // entry go: a new failure updates it (attempts, last error), and a
        // replica that stops midway leaves it parked.
        let outcome = subscriber
            .handle_one(row.event_id, &row.event_type, &row.envelope)
            .await
            .map_err(|error| unavailable(&error))?;
        if outcome == Outcome::Parked {
            return Err(status::failed_precondition(
                ErrorReason::ParkedEventFailedAgain,
                "the event failed again and stays parked: see its last error",
                &[("parked_event_id", id.to_string())],
            ));
        }
        self.delete_parked(id).await?;
        Ok(Response::new(RetryParkedEventResponse {}))
    }

    async fn discard_parked_event(
        &self,
        request: Request<DiscardParkedEventRequest>,
    ) -> Result<Response<DiscardParkedEventResponse>, Status> {
        let id = parked_id(&request.get_ref().parked_event_id)?;
        let row = self.parked(id).await?;
        tracing::info!(event = %row.event_id, subscriber = %row.subscriber, "parked event discarded");
        self.delete_parked(id).await?;
        Ok(Response::new(DiscardParkedEventResponse {}))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriberLabels {
    subscriber: String,
    transport: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// The jobs monitor's figures as Prometheus metrics.
#[derive(Debug, Clone, Default)]
pub struct JobsMetrics {
    backlog: Family<SubscriberLabels, Gauge>,
    lag: Family<SubscriberLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    parked: Family<SubscriberLabels, Gauge>,
    retrying: Family<SubscriberLabels, Gauge>,
    handled: Family<SubscriberLabels, Counter>,
    retries: Family<SubscriberLabels, Counter>,
    unpublished: Family<ServiceLabels, Gauge>,
}

impl JobsMetrics {
    /// Registers the families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "safra_subscriber_backlog",
            "Events published to a subscriber and not yet handled",
            self.backlog.clone(),
        );
        registry.register(
            "safra_subscriber_lag_seconds",
            "Age of a subscriber's oldest unhandled event",
            self.lag.clone(),
        );
        registry.register(
            "safra_subscriber_parked",
            "Events a subscriber parked after its last attempt",
            self.parked.clone(),
        );
        registry.register(
            "safra_subscriber_retrying",
            "Events waiting for another attempt in this replica",
            self.retrying.clone(),
        );
        registry.register(
            "safra_subscriber_handled",
            "Events a subscriber handled",
            self.handled.clone(),
        );
        registry.register(
            "safra_subscriber_retries",
            "Failed attempts retried in this replica",
            self.retries.clone(),
        );
        registry.register(
            "safra_outbox_unpublished",
            "Events committed to the outbox and not yet published",
            self.unpublished.clone(),
        );
    }

    /// Refreshes the metrics from `jobs` every few seconds, for as long as
    /// the process runs.
    pub async fn run(self, jobs: Arc<Jobs>) {
        let mut handled_seen = std::collections::HashMap::<String, u64>::new();
        let mut retries_seen = std::collections::HashMap::<String, u64>::new();
        loop {
            match jobs.subscriptions().await {
                Ok(subscriptions) => {
                    for subscription in subscriptions {
                        let labels = SubscriberLabels {
                            subscriber: subscription.name.clone(),
                            transport: subscription.transport.clone(),
                        };
                        self.backlog
                            .get_or_create(&labels)
                            .set(i64::from(subscription.backlog));
                        let lag = subscription.lag.unwrap_or_default();
                        #[allow(clippy::cast_precision_loss, reason = "seconds of lag")]
                        self.lag
                            .get_or_create(&labels)
                            .set(lag.seconds as f64 + f64::from(lag.nanos) / 1e9);
                        self.parked
                            .get_or_create(&labels)
                            .set(i64::from(subscription.parked));
                        self.retrying
                            .get_or_create(&labels)
                            .set(i64::from(subscription.retrying));
                        // Counters move by what grew since the last look.
                        let total = u64::try_from(subscription.handled_total).unwrap_or(0);
                        let before = handled_seen.insert(subscription.name.clone(), total);
                        self.handled
                            .get_or_create(&labels)
                            .inc_by(total.saturating_sub(before.unwrap_or(0)));
                        let retried = u64::try_from(subscription.retries_total).unwrap_or(0);
                        let before = retries_seen.insert(subscription.name.clone(), retried);
                        self.retries
                            .get_or_create(&labels)
                            .inc_by(retried.saturating_sub(before.unwrap_or(0)));
                    }
                }
                Err(error) => tracing::warn!(%error, "jobs metrics not refreshed"),
            }
            match jobs.outbox().await {
                Ok(outbox) => {
                    self.unpublished
                        .get_or_create(&ServiceLabels {
                            service: outbox.service,
                        })
                        .set(i64::from(outbox.unpublished));
                }
                Err(error) => tracing::warn!(%error, "outbox metrics not refreshed"),
            }
            tokio::time::sleep(METRICS_EVERY).await;
        }
    }
}
