//! The notifications database's queries (diesel-async): storing an
//! event's notices (once per event and user, serialised per user so that
//! a user's `seq` order is commit order), the keyset pages and unread
//! count of ListNotifications, MarkRead, and what a stream reads after the
//! last notification it sent.

use chrono::{DateTime, Utc};
use diesel::{prelude::*, result::Error as DieselError, sql_types::Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use safra::data::statement::Statement;
use safra::data::{
    db::{self, DbError},
    paging::Keyset,
};
use uuid::Uuid;

use crate::{
    domain::{Notice, NotificationsError},
    schema::notifications,
};

impl From<DieselError> for NotificationsError {
    fn from(error: DieselError) -> Self {
        NotificationsError::Database(DbError::Query(error))
    }
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = notifications)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct NotificationRow {
    /// Its id.
    pub id: Uuid,
    /// The recipient.
    pub user_id: Uuid,
    /// Lower case.
    pub kind: String,
    /// Headline.
    pub title: String,
    /// Text.
    pub body: String,
    /// Marked read.
    pub read: bool,
    /// Stored.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// The offering it concerns.
    pub offering_id: Option<Uuid>,
    /// The user's commit order.
    pub seq: i64,
}

impl NotificationRow {
    /// Where a page ends, for keyset paging.
    #[must_use]
    pub fn keyset(&self) -> Keyset {
        Keyset {
            time: self.create_time,
            id: self.id,
        }
    }
}

/// Stores the notices of several events (each event's id with its
/// notices) in one statement, after locking their users in one statement
/// too, in id order, so two transactions for the same users never
/// deadlock. A notice already stored for its event and user is skipped.
/// Returns how many were stored.
///
/// # Errors
/// The database.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    events: &[(Uuid, Vec<Notice>)],
) -> Result<usize, NotificationsError> {
    let mut users: Vec<String> = events
        .iter()
        .flat_map(|(_, notices)| notices.iter().map(|notice| notice.user.to_string()))
        .collect();
    if users.is_empty() {
        return Ok(0);
    }
    users.sort_unstable();
    users.dedup();
    Statement::new(
        "SELECT pg_advisory_xact_lock(hashtextextended('safra.notifications/' || user_id, 0)) \
         FROM unnest($1::text[]) WITH ORDINALITY AS locked (user_id, position) \
         ORDER BY position",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(&users)
    .execute(conn)
    .await?;
    let values: Vec<_> = events
        .iter()
        .flat_map(|(event, notices)| {
            notices.iter().map(move |notice| {
                (
                    notifications::user_id.eq(notice.user),
                    notifications::kind.eq(notice.kind.as_str()),
                    notifications::title.eq(&notice.title),
                    notifications::body.eq(&notice.body),
                    notifications::event_id.eq(*event),
                    notifications::offering_id.eq(notice.offering),
                )
            })
        })
        .collect();
    let mut stored = 0;
    // Six parameters a row, well under PostgreSQL's 65,535 a statement.
    for chunk in values.chunks(5_000) {
        stored += diesel::insert_into(notifications::table)
            .values(chunk)
            .on_conflict((notifications::event_id, notifications::user_id))
            .do_nothing()
            .execute(conn)
            .await?;
    }
    Ok(stored)
}

/// A page of `user`'s notifications, newest first, after `after`.
///
/// # Errors
/// A database error.
pub async fn list(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    unread_only: bool,
    after: Option<Keyset>,
    limit: usize,
) -> Result<Vec<NotificationRow>, NotificationsError> {
    let mut query = notifications::table
        .filter(notifications::user_id.eq(user))
        .select(NotificationRow::as_select())
        .order((notifications::create_time.desc(), notifications::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .into_boxed();
    if unread_only {
        query = query.filter(notifications::read.eq(false));
    }
    if let Some(after) = after {
        query = query.filter(db::older_than(
            notifications::create_time,
            notifications::id,
            after,
        ));
    }
    Ok(query.load(conn).await?)
}

/// How many of `user`'s notifications are unread.
///
/// # Errors
/// A database error.
pub async fn unread_count(
    conn: &mut AsyncPgConnection,
    user: Uuid,
) -> Result<i64, NotificationsError> {
    Ok(notifications::table
        .filter(notifications::user_id.eq(user))
        .filter(notifications::read.eq(false))
        .count()
        .get_result(conn)
        .await?)
}

/// Marks `user`'s notification `id` read (again, harmlessly).
///
/// # Errors
/// [`NotificationsError::NotFound`] when it is not `user`'s, or a database
/// error.
pub async fn mark_read(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    id: Uuid,
) -> Result<NotificationRow, NotificationsError> {
    let unread = diesel::update(
        notifications::table
            .find(id)
            .filter(notifications::user_id.eq(user))
            .filter(notifications::read.eq(false)),
    )
    .set(notifications::read.eq(true))
    .returning(NotificationRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    match unread {
        Some(row) => Ok(row),
        None => notification(conn, user, id).await,
    }
}

/// `user`'s notification `id`.
///
/// # Errors
/// [`NotificationsError::NotFound`] when it is not `user`'s, or a database
/// error.
pub async fn notification(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    id: Uuid,
) -> Result<NotificationRow, NotificationsError> {
    notifications::table
        .find(id)
        .filter(notifications::user_id.eq(user))
        .select(NotificationRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(NotificationsError::NotFound(id))
}

/// `user`'s newest `seq` (0 when they have none).
///
/// # Errors
/// A database error.
pub async fn last_seq(conn: &mut AsyncPgConnection, user: Uuid) -> Result<i64, NotificationsError> {
    let last: Option<i64> = notifications::table
        .filter(notifications::user_id.eq(user))
        .select(diesel::dsl::max(notifications::seq))
        .get_result(conn)
        .await?;
    Ok(last.unwrap_or(0))
}

/// Up to `limit` of `user`'s notifications after `seq`, oldest first.
///
/// # Errors
/// A database error.
pub async fn after_seq(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    seq: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, NotificationsError> {
    Ok(notifications::table
        .filter(notifications::user_id.eq(user))
        .filter(notifications::seq.gt(seq))
        .order(notifications::seq)
        .limit(limit)
        .select(NotificationRow::as_select())
        .load(conn)
        .await?)
}

/// Starts listening on `channel` on `conn` (a connection of its own).
///
/// # Errors
/// A database error.
pub async fn listen(conn: &mut AsyncPgConnection, channel: &str) -> Result<(), NotificationsError> {
    diesel::sql_query(format!("LISTEN {channel}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// The payloads of the notifications `conn` receives, until it breaks.
pub fn notifications(
    conn: &mut AsyncPgConnection,
) -> impl tokio_stream::Stream<Item = String> + '_ {
    use tokio_stream::StreamExt;
    conn.notifications_stream()
        .map_while(|notification| notification.ok().map(|notification| notification.payload))
}
