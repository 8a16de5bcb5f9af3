//! The PostgreSQL event log: appends (idempotent by event id, in the order
//! given) and the rows after a cursor. Appends are serialised by the log's
//! own trigger, so positions are in commit order and a cursor never skips
//! an event committed late.

use crate::data::statement::Statement;
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Bytea, Text, Uuid as SqlUuid},
};
use std::{sync::Arc, time::Duration};

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tokio::sync::Notify;
use tokio_stream::StreamExt;
use uuid::Uuid;

use super::BusError;
use crate::data::db::Database;

/// An event on its way into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The envelope's id.
    pub event_id: Uuid,
    /// `safra.events.v1.<Name>`.
    pub event_type: String,
    /// Ordering key.
    pub aggregate_key: String,
    /// The encoded envelope.
    pub envelope: Vec<u8>,
}

/// An event read from the log.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Logged {
    /// Its place in the log.
    #[diesel(sql_type = BigInt)]
    pub position: i64,
    /// The envelope's id.
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    /// `safra.events.v1.<Name>`.
    #[diesel(sql_type = Text)]
    pub event_type: String,
    /// Ordering key.
    #[diesel(sql_type = Text)]
    pub aggregate_key: String,
    /// The encoded envelope.
    #[diesel(sql_type = Bytea)]
    pub envelope: Vec<u8>,
}

/// The bus database.
#[derive(Debug, Clone)]
pub struct PgBus {
    db: Database,
}

impl PgBus {
    /// The bus over `db` (the `safra_events` database).
    #[must_use]
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The bus's pool.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Appends `events` in their order, once each: an event already in the
    /// log (a relay that published and died before marking its outbox) is
    /// left as it is. Committed when this returns.
    ///
    /// # Errors
    /// The database.
    pub async fn append(&self, events: &[Outgoing]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.db.connection().await?;
        Statement::new(
            "INSERT INTO event_log (event_id, event_type, aggregate_key, envelope) \
             SELECT i.id, i.kind, i.aggregate, i.envelope \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[]) \
                  WITH ORDINALITY AS i (id, kind, aggregate, envelope, ord) \
             ORDER BY i.ord \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind::<Array<SqlUuid>, _>(
            events
                .iter()
                .map(|event| event.event_id)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(
            events
                .iter()
                .map(|event| event.event_type.clone())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(
            events
                .iter()
                .map(|event| event.aggregate_key.clone())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Bytea>, _>(
            events
                .iter()
                .map(|event| event.envelope.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

/// Up to `limit` events after `position`, in log order.
///
/// # Errors
/// The database.
pub async fn after(
    conn: &mut AsyncPgConnection,
    position: i64,
    limit: i64,
) -> Result<Vec<Logged>, BusError> {
    Ok(Statement::new(
        "SELECT position, event_id, event_type, aggregate_key, envelope FROM event_log \
         WHERE position > $1 ORDER BY position LIMIT $2",
    )
    .bind::<BigInt, _>(position)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Up to `limit` events of `types` after `position` and up to `last`, in
/// log order.
///
/// # Errors
/// The database.
pub async fn following(
    conn: &mut AsyncPgConnection,
    position: i64,
    last: i64,
    types: &[&str],
    limit: i64,
) -> Result<Vec<Logged>, BusError> {
    Ok(Statement::new(
        "SELECT position, event_id, event_type, aggregate_key, envelope FROM event_log \
         WHERE position > $1 AND position <= $2 AND event_type = ANY($3) \
         ORDER BY position LIMIT $4",
    )
    .bind::<BigInt, _>(position)
    .bind::<BigInt, _>(last)
    .bind::<Array<Text>, _>(types)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// Keeps a LISTEN connection to `db` on `channel` and rings `wake` on
/// every notification; after a lost connection it connects again and rings
/// once, in case something happened meanwhile. Runs until aborted.
pub(super) async fn wake_on(db: Database, channel: &'static str, wake: Arc<Notify>) {
    loop {
        match db.dedicated_connection().await {
            Ok(mut conn) => {
                match diesel::sql_query(format!("LISTEN {channel}"))
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => {
                        wake.notify_one();
                        let mut notifications = std::pin::pin!(conn.notifications_stream());
                        while let Some(Ok(_)) = notifications.next().await {
                            wake.notify_one();
                        }
                        tracing::warn!(channel, "the LISTEN connection closed; reconnecting");
                    }
                    Err(error) => tracing::warn!(channel, %error, "LISTEN failed"),
                }
            }
            Err(error) => tracing::warn!(channel, %error, "cannot connect to LISTEN"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs `round` until `stop` resolves, woken by notifications on `channel`
/// of `db`: the next round at once when `round` asks for no wait (there is
/// more work), else after the wait it names or a notification, whichever
/// comes first. Shared by the relay and the log's subscribers.
pub(super) async fn run_woken<R, F>(
    db: Database,
    channel: &'static str,
    stop: impl std::future::Future<Output = ()>,
    mut round: R,
) where
    R: FnMut() -> F,
    F: std::future::Future<Output = Duration>,
{
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(wake_on(db, channel, wake.clone()));
    tokio::pin!(stop);
    loop {
        let wait = round().await;
        if wait.is_zero() {
            // Still let a stop through between full rounds.
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = std::future::ready(()) => continue,
            }
        }
        tokio::select! {
            () = &mut stop => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    listener.abort();
}
