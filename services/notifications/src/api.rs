//! The notifications service's gRPC surface and its event handling.
//!
//! [`NoticeHandler`] turns each event it follows into the domain's notices
//! and stores them in the transaction that records the event handled.
//! Every replica keeps one LISTEN connection ([`Hub`]) on the channel the
//! notifications table notifies at commit, so a stream held by one replica
//! hears of a row stored by another. A stream reads from the database
//! after the last notification it sent (by the user's `seq`, which is
//! commit order), so a lost wake-up delays nothing but a heartbeat, and a
//! resume after an id misses nothing.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use safra::{
    bus::{
        subscriber::{self, Handler, HandlerError, HandlerFuture, Prepared, Retries, Subscriber},
        subscriptions,
    },
    contract::status::{self, Violation},
    data::db::{Connection, Database},
    data::outbox::Event,
    data::paging::{self, timestamp},
    events::v1::{
        DistributionCompleted, Envelope, InvestmentCreated, OfferingCancelled, OfferingFunded,
        OfferingSettled, PaymentConfirmed, UserRegistered,
    },
    identity::auth::AuthenticatedUser,
    notifications::v1::{
        ListNotificationsRequest, ListNotificationsResponse, MarkReadRequest, MarkReadResponse,
        Notification, NotificationKind, StreamNotificationsRequest, StreamNotificationsResponse,
        notifications_service_server::NotificationsService,
    },
    r#type::v1::ErrorReason,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{self, BadEvent, Kind, Notice, NotificationsError},
    store::{self, NotificationRow},
};

/// The channel the notifications table's trigger notifies.
const CHANNEL: &str = "safra_notifications";
/// Rows a stream reads per query.
const STREAM_BATCH: i64 = 200;
/// How long a broken LISTEN connection waits before reconnecting.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// The subscriber's name (its cursor, its queue).
const SUBSCRIBER: &str = "notifications";

impl From<NotificationsError> for Status {
    fn from(error: NotificationsError) -> Self {
        let message = error.to_string();
        match error {
            NotificationsError::NotFound(id) => status::with_metadata(
                Code::NotFound,
                ErrorReason::NotificationNotFound,
                message,
                &[("notification_id", id.to_string())],
                Vec::new(),
            ),
            NotificationsError::PageToken => status::invalid_argument(&[Violation {
                field: "page_token".into(),
                description: message,
                reason: "INVALID",
            }]),
            NotificationsError::Database(error) => error.into(),
        }
    }
}

/// A failed handling is retried, then parked with this text.
impl From<NotificationsError> for HandlerError {
    fn from(error: NotificationsError) -> Self {
        HandlerError(error.to_string())
    }
}

impl From<BadEvent> for HandlerError {
    fn from(error: BadEvent) -> Self {
        HandlerError(error.0)
    }
}

/// Wakes the streams of a user when a notification of theirs is stored,
/// in any replica. A nil id wakes every stream (after a reconnect, when
/// notifications may have been missed).
#[derive(Debug, Clone)]
pub struct Hub {
    stored: broadcast::Sender<Uuid>,
}

impl Hub {
    /// A hub listening on `db` for as long as the process runs.
    #[must_use]
    pub fn listen(db: Database) -> Self {
        let (stored, _) = broadcast::channel(1024);
        tokio::spawn(listen(db, stored.clone()));
        Self { stored }
    }

    fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.stored.subscribe()
    }
}

async fn listen(db: Database, stored: broadcast::Sender<Uuid>) {
    loop {
        match db.dedicated_connection().await {
            Ok(mut conn) => match store::listen(&mut conn, CHANNEL).await {
                Ok(()) => {
                    drop(stored.send(Uuid::nil()));
                    let mut payloads = std::pin::pin!(store::notifications(&mut conn));
                    while let Some(payload) = payloads.next().await {
                        drop(stored.send(recipient(&payload).unwrap_or(Uuid::nil())));
                    }
                    tracing::warn!("the notifications LISTEN connection closed; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "LISTEN on the notifications database failed"),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot reach the notifications database to LISTEN");
            }
        }
        tokio::time::sleep(RECONNECT_WAIT).await;
    }
}

/// The `user_id` of a notification's NOTIFY payload, the trigger's
/// `{"id" : "...", "user_id" : "..."}` (read without a JSON library:
/// only the gateway speaks JSON).
fn recipient(payload: &str) -> Option<Uuid> {
    let (_, rest) = payload.split_once("\"user_id\"")?;
    let (_, value) = rest.trim_start().strip_prefix(':')?.split_once('"')?;
    let (id, _) = value.split_once('"')?;
    Uuid::parse_str(id).ok()
}

/// The notifications service.
#[derive(Debug, Clone)]
pub struct Notifications {
    db: Database,
    hub: Hub,
    heartbeat: Duration,
    stop: watch::Receiver<bool>,
    streams: Arc<Streams>,
}

/// How many notification streams one user may hold open on one replica,
/// and how long a stream lasts before it ends (cleanly, with OK) for the
/// client to resume after its last id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams open at once per user, on this replica.
    pub per_user: usize,
    /// The longest a stream stays open.
    pub lifetime: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            per_user: 8,
            lifetime: Duration::from_secs(30 * 60),
        }
    }
}

/// The streams open on this replica, per user, and their figures.
#[derive(Debug, Default)]
struct Streams {
    limits: StreamLimits,
    open: Mutex<HashMap<Uuid, usize>>,
    open_gauge: Gauge,
    refused: Counter,
}

/// One user's stream counted open until dropped.
struct StreamSlot {
    streams: Arc<Streams>,
    user: Uuid,
}

impl Streams {
    /// A slot for one more of `user`'s streams, or RESOURCE_EXHAUSTED.
    fn open(self: &Arc<Self>, user: Uuid) -> Result<StreamSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = open.entry(user).or_insert(0);
        if *mine >= self.limits.per_user {
            self.refused.inc();
            let limit = self.limits.per_user;
            return Err(status::with_metadata(
                Code::ResourceExhausted,
                ErrorReason::TooManyStreams,
                format!(
                    "a user may hold {limit} notification streams open at once; close one first"
                ),
                &[("limit", limit.to_string())],
                Vec::new(),
            ));
        }
        *mine += 1;
        self.open_gauge.inc();
        Ok(StreamSlot {
            streams: self.clone(),
            user,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .streams
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(mine) = open.get_mut(&self.user) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.remove(&self.user);
            }
        }
        self.streams.open_gauge.dec();
    }
}

impl Notifications {
    /// The service over `db`, waking streams through `hub`, sending a
    /// heartbeat after `heartbeat` of silence and ending streams when
    /// `stop` turns true.
    #[must_use]
    pub fn new(db: Database, hub: Hub, heartbeat: Duration, stop: watch::Receiver<bool>) -> Self {
        Self {
            db,
            hub,
            heartbeat,
            stop,
            streams: Arc::default(),
        }
    }

    /// The service with `limits` on each user's streams (8 at once, 30
    /// minutes each, unless set).
    #[must_use]
    pub fn with_stream_limits(mut self, limits: StreamLimits) -> Self {
        self.streams = Arc::new(Streams {
            limits,
            ..Streams::default()
        });
        self
    }

    /// Adds the streams' figures to those the service's `/metrics` serves.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "safra_notifications_streams_open",
            "Notification streams open on this replica",
            self.streams.open_gauge.clone(),
        );
        registry.register(
            "safra_notifications_streams_refused",
            "Notification streams refused because their user held as many as one may",
            self.streams.refused.clone(),
        );
    }

    /// The subscribers this service runs on the bus.
    #[must_use]
    pub fn subscribers(&self, retries: Retries) -> Vec<Subscriber> {
        vec![Subscriber::new(
            SUBSCRIBER,
            subscriptions::of(SUBSCRIBER).iter().copied(),
            Arc::new(NoticeHandler),
            self.db.clone(),
            retries,
        )]
    }
}

/// Stores the notices each event makes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoticeHandler;

impl Handler for NoticeHandler {
    fn handle<'a>(
        &'a self,
        conn: &'a mut Connection,
        envelope: &'a Envelope,
        _prepared: &'a Prepared,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            store::insert(conn, &[event_notices(envelope)?]).await?;
            Ok(())
        })
    }

    fn batches(&self) -> bool {
        true
    }

    /// A batch's notices, whatever their events, locked and stored in two
    /// statements.
    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut Connection,
        envelopes: &'a [&'a Envelope],
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            let events = envelopes
                .iter()
                .map(|envelope| event_notices(envelope))
                .collect::<Result<Vec<_>, _>>()?;
            store::insert(conn, &events).await?;
            Ok(())
        })
    }
}

/// An event's id and the notices it makes.
fn event_notices(envelope: &Envelope) -> Result<(Uuid, Vec<Notice>), HandlerError> {
    let event = Uuid::parse_str(&envelope.id)
        .map_err(|_| HandlerError(format!("event id '{}' is not a UUID", envelope.id)))?;
    Ok((event, notices(envelope)?))
}

fn notices(envelope: &Envelope) -> Result<Vec<Notice>, HandlerError> {
    Ok(match envelope.r#type.as_str() {
        UserRegistered::TYPE => domain::registered(&subscriber::payload(envelope)?)?,
        InvestmentCreated::TYPE => domain::invested(&subscriber::payload(envelope)?)?,
        PaymentConfirmed::TYPE => domain::paid(&subscriber::payload(envelope)?)?,
        DistributionCompleted::TYPE => domain::distributed(&subscriber::payload(envelope)?)?,
        OfferingFunded::TYPE => domain::funded(&subscriber::payload(envelope)?)?,
        OfferingCancelled::TYPE => domain::cancelled(&subscriber::payload(envelope)?)?,
        OfferingSettled::TYPE => domain::settled(&subscriber::payload(envelope)?)?,
        _ => Vec::new(),
    })
}

/// The stream StreamNotifications answers with.
pub type NotificationStream =
    Pin<Box<dyn Stream<Item = Result<StreamNotificationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NotificationsService for Notifications {
    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let user = caller(&request)?;
        let body = request.into_inner();
        let size = paging::page_size(body.page_size);
        let after = paging::decode(&body.page_token).map_err(|_| NotificationsError::PageToken)?;
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(NotificationsError::from)?;
        let mut rows = store::list(&mut conn, user, body.unread_only, after, size + 1).await?;
        let next_page_token = paging::next_page(&mut rows, size, NotificationRow::keyset);
        let unread = store::unread_count(&mut conn, user).await?;
        Ok(Response::new(ListNotificationsResponse {
            notifications: rows.iter().map(message).collect(),
            next_page_token,
            unread_count: i32::try_from(unread).unwrap_or(i32::MAX),
        }))
    }

    async fn mark_read(
        &self,
        request: Request<MarkReadRequest>,
    ) -> Result<Response<MarkReadResponse>, Status> {
        let user = caller(&request)?;
        let id = uuid(&request.get_ref().notification_id)?;
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(NotificationsError::from)?;
        let row = store::mark_read(&mut conn, user, id).await?;
        Ok(Response::new(MarkReadResponse {
            notification: Some(message(&row)),
        }))
    }

    type StreamNotificationsStream = NotificationStream;

    async fn stream_notifications(
        &self,
        request: Request<StreamNotificationsRequest>,
    ) -> Result<Response<Self::StreamNotificationsStream>, Status> {
        let user = caller(&request)?;
        let slot = self.streams.open(user)?;
        // Listen before reading, so nothing stored meanwhile is missed.
        let woken = self.hub.subscribe();
        let start = {
            let mut conn = self
                .db
                .connection()
                .await
                .map_err(NotificationsError::from)?;
            match request.get_ref().after_id.as_str() {
                "" => store::last_seq(&mut conn, user).await?,
                after => {
                    store::notification(&mut conn, user, uuid(after)?)
                        .await?
                        .seq
                }
            }
        };
        let (sender, receiver) = mpsc::channel(32);
        tokio::spawn(
            Feed {
                db: self.db.clone(),
                user,
                last: start,
                heartbeat: self.heartbeat,
                ends_at: tokio::time::Instant::now() + self.streams.limits.lifetime,
                sender,
                _slot: slot,
            }
            .run(woken, self.stop.clone()),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// One open stream: sends the user's notifications after `last` as they
/// come, a heartbeat after a silence, and ends on shutdown, at the end of
/// its lifetime (with OK: the client resumes after its last id) or when
/// the client goes; its user's slot is given back then.
struct Feed {
    db: Database,
    user: Uuid,
    last: i64,
    heartbeat: Duration,
    ends_at: tokio::time::Instant,
    sender: mpsc::Sender<Result<StreamNotificationsResponse, Status>>,
    _slot: StreamSlot,
}

impl Feed {
    async fn run(mut self, mut woken: broadcast::Receiver<Uuid>, mut stop: watch::Receiver<bool>) {
        let mut quiet_until = tokio::time::Instant::now() + self.heartbeat;
        let mut look = true;
        loop {
            if look {
                match self.send_new().await {
                    Ok(0) => {}
                    Ok(_) => quiet_until = tokio::time::Instant::now() + self.heartbeat,
                    Err(()) => return,
                }
                look = false;
            }
            tokio::select! {
                () = stopping(&mut stop) => return,
                () = self.sender.closed() => return,
                () = tokio::time::sleep_until(self.ends_at) => return,
                wake = woken.recv() => match wake {
                    Ok(user) => look = user == self.user || user.is_nil(),
                    // Too many at once: look, to be sure.
                    Err(broadcast::error::RecvError::Lagged(_)) => look = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(quiet_until) => {
                    let beat = StreamNotificationsResponse {
                        notification: None,
                        heartbeat_time: Some(timestamp(chrono::Utc::now())),
                    };
                    if self.sender.send(Ok(beat)).await.is_err() {
                        return;
                    }
                    quiet_until = tokio::time::Instant::now() + self.heartbeat;
                }
            }
        }
    }

    /// Sends everything after `last`; how many, or `Err` when the stream
    /// is over (the client went, or the database failed and was reported).
    async fn send_new(&mut self) -> Result<usize, ()> {
        let mut sent = 0;
        loop {
            let rows = match self.db.connection().await {
                Ok(mut conn) => {
                    store::after_seq(&mut conn, self.user, self.last, STREAM_BATCH).await
                }
                Err(error) => Err(NotificationsError::from(error)),
            };
            let rows = match rows {
                Ok(rows) => rows,
                Err(error) => {
                    drop(self.sender.send(Err(error.into())).await);
                    return Err(());
                }
            };
            let full = rows.len() >= usize::try_from(STREAM_BATCH).unwrap_or(usize::MAX);
            for row in rows {
                let item = StreamNotificationsResponse {
                    notification: Some(message(&row)),
                    heartbeat_time: None,
                };
                if self.sender.send(Ok(item)).await.is_err() {
                    return Err(());
                }
                self.last = row.seq;
                sent += 1;
            }
            if !full {
                return Ok(sent);
            }
        }
    }
}

/// Resolves when the service shuts down.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let stopped = stop.wait_for(|stopping| *stopping).await.is_ok();
    if !stopped {
        // The sender is gone: no shutdown will be signalled.
        std::future::pending::<()>().await;
    }
}

fn message(row: &NotificationRow) -> Notification {
    Notification {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        kind: match Kind::parse(&row.kind) {
            Some(Kind::UserRegistered) => NotificationKind::UserRegistered,
            Some(Kind::InvestmentCreated) => NotificationKind::InvestmentCreated,
            Some(Kind::PaymentConfirmed) => NotificationKind::PaymentConfirmed,
            Some(Kind::DistributionCompleted) => NotificationKind::DistributionCompleted,
            Some(Kind::OfferingFunded) => NotificationKind::OfferingFunded,
            Some(Kind::OfferingCancelled) => NotificationKind::OfferingCancelled,
            Some(Kind::OfferingSettled) => NotificationKind::OfferingSettled,
            None => NotificationKind::Unspecified,
        } as i32,
        title: row.title.clone(),
        body: row.body.clone(),
        read: row.read,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
        offering_id: row.offering_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

fn caller<T>(request: &Request<T>) -> Result<Uuid, Status> {
    // The contract stage admits signed-in methods only with a user.
    AuthenticatedUser::of(request)
        .and_then(|user| Uuid::parse_str(&user.user_id).ok())
        .ok_or_else(|| status::internal(&"a signed-in method ran without a user"))
}

fn uuid(value: &str) -> Result<Uuid, Status> {
    // The contract stage checked the format; a failure here is a bug.
    Uuid::parse_str(value)
        .map_err(|_| status::internal(&"a UUID field passed validation but does not parse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_payload_names_its_user() {
        let user = Uuid::new_v4();
        let payload = format!(r#"{{"id" : "{}", "user_id" : "{user}"}}"#, Uuid::new_v4());
        assert_eq!(recipient(&payload), Some(user));
        assert_eq!(recipient(r#"{"id" : "x"}"#), None);
        assert_eq!(recipient(r#"{"user_id" : "not a uuid"}"#), None);
    }
}
