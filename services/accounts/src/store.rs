//! The accounts database's queries (diesel-async): users for now; refresh
//! tokens, throttles, signing keys and the audit log join as their RPCs do.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use safra::data::statement::Statement;
use uuid::Uuid;

use safra::data::outbox::OutboxEvent;

use crate::{
    domain::AccountsError,
    schema::{login_throttles, refresh_tokens, signing_keys, users},
};

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    /// Its id.
    pub id: Uuid,
    /// The normalised e-mail.
    pub email: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// The display name.
    pub display_name: String,
    /// `investor`, `producer` or `admin`.
    pub role: String,
    /// When it was registered.
    pub create_time: DateTime<Utc>,
    /// When it last changed.
    pub update_time: DateTime<Utc>,
}

/// A user to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    /// Its id, chosen by the service.
    pub id: Uuid,
    /// The normalised e-mail.
    pub email: &'a str,
    /// The argon2id PHC string.
    pub password_hash: &'a str,
    /// The display name.
    pub display_name: &'a str,
    /// The role's stored value.
    pub role: &'a str,
}

/// What storing a user can run into.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another user has this e-mail (the unique index said so).
    #[error("the e-mail is already registered")]
    EmailTaken,
    /// Anything else the database said.
    #[error(transparent)]
    Database(#[from] DieselError),
}

/// Database failures reach the service's error as `DbError`, so that only
/// this file names diesel.
impl From<DieselError> for AccountsError {
    fn from(error: DieselError) -> Self {
        AccountsError::Database(safra::data::db::DbError::Query(error))
    }
}

impl From<StoreError> for AccountsError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::EmailTaken => AccountsError::EmailTaken,
            StoreError::Database(error) => error.into(),
        }
    }
}

/// One audit record: who did what to what, and the trace it happened in.
#[derive(Debug, Clone)]
pub struct NewAudit {
    /// The user who acted; `None` for the system or an operator's tool.
    pub actor_id: Option<Uuid>,
    /// What happened (`user.created_by_admin`, `admin.bootstrapped`,
    /// `signing_key.rotated`).
    pub action: String,
    /// What it happened to (a user id, a kid).
    pub subject: Option<String>,
    /// Anything else worth keeping, stored as `{"detail": ...}`.
    pub detail: String,
    /// The trace of the call that did it.
    pub trace_id: Option<String>,
}

/// Appends `record` to the audit log.
///
/// # Errors
/// A database error.
pub async fn insert_audit(
    conn: &mut AsyncPgConnection,
    record: &NewAudit,
) -> Result<(), DieselError> {
    use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};

    // The JSON is built by PostgreSQL, so the service needs no JSON library.
    Statement::new(
        "INSERT INTO audit_log (actor_id, action, subject, detail, trace_id) \
         VALUES ($1, $2, $3, jsonb_build_object('detail', $4::text), $5)",
    )
    .bind::<Nullable<SqlUuid>, _>(record.actor_id)
    .bind::<Text, _>(&record.action)
    .bind::<Nullable<Text>, _>(record.subject.as_deref())
    .bind::<Text, _>(&record.detail)
    .bind::<Nullable<Text>, _>(record.trace_id.as_deref())
    .execute(conn)
    .await
    .map(drop)
}

/// Stores `user` and, in the same transaction, its audit record and the
/// event `registered` describes it with.
///
/// # Errors
/// [`StoreError`].
pub async fn insert_audited_user<F>(
    conn: &mut AsyncPgConnection,
    user: &NewUser<'_>,
    record: &NewAudit,
    registered: F,
) -> Result<UserRow, StoreError>
where
    F: FnOnce(&UserRow) -> OutboxEvent + Send,
{
    let user = user.clone();
    let record = record.clone();
    conn.transaction(async move |conn| {
        let row = insert_user_row(conn, &user).await?;
        insert_audit(conn, &record).await?;
        registered(&row).write(conn).await?;
        Ok(row)
    })
    .await
}

/// Stores `user` with the event `registered` describes it with (the
/// outbox row commits with the user); a second user with the same e-mail
/// is [`StoreError::EmailTaken`], even when two registrations race.
///
/// # Errors
/// [`StoreError`].
pub async fn insert_user<F>(
    conn: &mut AsyncPgConnection,
    user: &NewUser<'_>,
    registered: F,
) -> Result<UserRow, StoreError>
where
    F: FnOnce(&UserRow) -> OutboxEvent + Send,
{
    let user = user.clone();
    conn.transaction(async move |conn| {
        let row = insert_user_row(conn, &user).await?;
        registered(&row).write(conn).await?;
        Ok(row)
    })
    .await
}

async fn insert_user_row(
    conn: &mut AsyncPgConnection,
    user: &NewUser<'_>,
) -> Result<UserRow, StoreError> {
    diesel::insert_into(users::table)
        .values(user)
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|error| match error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, ref info)
                if info.constraint_name() == Some("users_email_key") =>
            {
                StoreError::EmailTaken
            }
            other => StoreError::Database(other),
        })
}

/// The user with the normalised `email`.
///
/// # Errors
/// A database error.
pub async fn user_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> Result<Option<UserRow>, DieselError> {
    users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The user with `id`.
///
/// # Errors
/// A database error.
pub async fn user_by_id(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<UserRow>, DieselError> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// One page of users, newest first (`create_time` desc, then `id` desc),
/// optionally of one role, starting after the keyset `after`.
///
/// # Errors
/// A database error.
pub async fn list_users(
    conn: &mut AsyncPgConnection,
    role: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<UserRow>, DieselError> {
    let mut query = users::table
        .select(UserRow::as_select())
        .order((users::create_time.desc(), users::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(role) = role {
        query = query.filter(users::role.eq(role.to_owned()));
    }
    if let Some((time, id)) = after {
        query = query.filter(
            users::create_time
                .lt(time)
                .or(users::create_time.eq(time).and(users::id.lt(id))),
        );
    }
    query.load(conn).await
}

/// A refresh token to store: only its hash.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct NewRefreshToken<'a> {
    /// The login it belongs to; every rotation stays in the family.
    pub family_id: Uuid,
    /// Whose session it is.
    pub user_id: Uuid,
    /// SHA-256 of the opaque token.
    pub token_hash: &'a [u8],
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Stores a refresh token.
///
/// # Errors
/// A database error.
pub async fn insert_refresh_token(
    conn: &mut AsyncPgConnection,
    token: &NewRefreshToken<'_>,
) -> Result<(), DieselError> {
    diesel::insert_into(refresh_tokens::table)
        .values(token)
        .execute(conn)
        .await
        .map(drop)
}

/// The state of a stored refresh token.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
#[diesel(check_for_backend(diesel::pg::Pg))]
struct RefreshTokenState {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was valid: it is now used, and its successor is stored.
    Rotated {
        /// Whose session it is.
        user_id: Uuid,
    },
    /// It had been used already: the whole family is now revoked (someone
    /// holds a stolen copy, or replayed it).
    Reused,
    /// Unknown, revoked or expired.
    Invalid,
}

/// Exchanges the token hashed `presented` for `successor` (same family),
/// under a row lock: of two concurrent exchanges of one token exactly one
/// rotates, and the other is reuse, which revokes the family.
///
/// # Errors
/// A database error.
pub async fn rotate_refresh_token(
    conn: &mut AsyncPgConnection,
    presented: &[u8],
    successor: &[u8],
    successor_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Rotation, DieselError> {
    let presented = presented.to_vec();
    let successor = successor.to_vec();
    conn.transaction(async move |conn| {
        let found: Option<RefreshTokenState> = refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(&presented))
            .select(RefreshTokenState::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(RefreshTokenState {
            id,
            family_id,
            user_id,
            used_at,
            revoked_at,
            expires_at,
        }) = found
        else {
            return Ok(Rotation::Invalid);
        };
        if revoked_at.is_some() || expires_at <= now {
            return Ok(Rotation::Invalid);
        }
        if used_at.is_some() {
            revoke_family(conn, family_id, now).await?;
            return Ok(Rotation::Reused);
        }
        diesel::update(refresh_tokens::table.find(id))
            .set(refresh_tokens::used_at.eq(now))
            .execute(conn)
            .await?;
        insert_refresh_token(
            conn,
            &NewRefreshToken {
                family_id,
                user_id,
                token_hash: &successor,
                expires_at: successor_expires_at,
            },
        )
        .await?;
        Ok(Rotation::Rotated { user_id })
    })
    .await
}

async fn revoke_family(
    conn: &mut AsyncPgConnection,
    family_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), DieselError> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
    .await
    .map(drop)
}

/// Revokes the family of the token hashed `presented` (Logout). Returns
/// whether there was such a token.
///
/// # Errors
/// A database error.
pub async fn revoke_family_of(
    conn: &mut AsyncPgConnection,
    presented: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, DieselError> {
    let family: Option<Uuid> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(presented))
        .select(refresh_tokens::family_id)
        .first(conn)
        .await
        .optional()?;
    match family {
        Some(family_id) => revoke_family(conn, family_id, now).await.map(|()| true),
        None => Ok(false),
    }
}

/// Until when the latest of `keys` is locked, if any is locked at `now`.
///
/// # Errors
/// A database error.
pub async fn locked_until(
    conn: &mut AsyncPgConnection,
    keys: &[String],
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DieselError> {
    let until: Vec<Option<DateTime<Utc>>> = login_throttles::table
        .filter(login_throttles::key.eq_any(keys))
        .filter(login_throttles::locked_until.gt(now))
        .select(login_throttles::locked_until)
        .load(conn)
        .await?;
    Ok(until.into_iter().flatten().max())
}

/// Counts a failed login against `key` and locks it once `free` failures
/// have happened within `window`: 1 s after the first failure past `free`,
/// doubling with each further one, at most `max_lock`. One statement, so
/// concurrent failures on several replicas all count.
///
/// # Errors
/// A database error.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    key: &str,
    now: DateTime<Utc>,
    free: i32,
    window: chrono::Duration,
    max_lock: chrono::Duration,
) -> Result<(), DieselError> {
    use diesel::sql_types::{Integer, Interval, Text, Timestamptz};

    Statement::new(
        "INSERT INTO login_throttles AS t (key, failures, last_failure) VALUES ($1, 1, $2) \
         ON CONFLICT (key) DO UPDATE SET \
           failures = CASE WHEN t.last_failure < $2 - $4 THEN 1 ELSE t.failures + 1 END, \
           last_failure = $2, \
           locked_until = CASE \
             WHEN t.last_failure < $2 - $4 OR t.failures + 1 <= $3 THEN t.locked_until \
             ELSE $2 + least($5, interval '1 second' * power(2, t.failures + 1 - $3 - 1)) END",
    )
    .bind::<Text, _>(key)
    .bind::<Timestamptz, _>(now)
    .bind::<Integer, _>(free)
    .bind::<Interval, _>(diesel::data_types::PgInterval::from_microseconds(
        window.num_microseconds().unwrap_or(i64::MAX),
    ))
    .bind::<Interval, _>(diesel::data_types::PgInterval::from_microseconds(
        max_lock.num_microseconds().unwrap_or(i64::MAX),
    ))
    .execute(conn)
    .await
    .map(drop)
}

/// Forgets the failures of `key` (after a successful login).
///
/// # Errors
/// A database error.
pub async fn clear_failures(conn: &mut AsyncPgConnection, key: &str) -> Result<(), DieselError> {
    diesel::delete(login_throttles::table.find(key))
        .execute(conn)
        .await
        .map(drop)
}

/// A stored signing key (private half sealed).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = signing_keys)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct SigningKeyRow {
    /// Its key id (the JWT header's `kid`).
    pub kid: String,
    /// The raw Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The sealed PKCS#8 private key.
    pub private_key_ciphertext: Vec<u8>,
    /// The nonce it was sealed with.
    pub nonce: Vec<u8>,
    /// When it was made.
    pub create_time: DateTime<Utc>,
    /// From when it no longer signs (a newer key took over).
    pub retire_after: Option<DateTime<Utc>>,
    /// From when it leaves the JWKS (every token it signed has expired).
    pub not_after: Option<DateTime<Utc>>,
}

/// A signing key to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = signing_keys)]
pub struct NewSigningKey<'a> {
    /// Its key id.
    pub kid: &'a str,
    /// The raw Ed25519 public key.
    pub public_key: &'a [u8],
    /// The sealed PKCS#8 private key.
    pub private_key_ciphertext: &'a [u8],
    /// The nonce it was sealed with.
    pub nonce: &'a [u8],
}

/// Stores a new signing key and retires the ones before it: they stop
/// signing now and leave the JWKS once `token_lifetime` has passed, when
/// every token they signed has expired. One transaction under an advisory
/// lock, so there is always exactly one key that signs, even when two
/// rotations run at once (each statement then sees the other's key).
///
/// # Errors
/// A database error.
pub async fn rotate_signing_key(
    conn: &mut AsyncPgConnection,
    key: &NewSigningKey<'_>,
    now: DateTime<Utc>,
    token_lifetime: chrono::Duration,
) -> Result<SigningKeyRow, DieselError> {
    let key = key.clone();
    conn.transaction(async move |conn| {
        Statement::new(
            "select pg_advisory_xact_lock(hashtextextended('safra.accounts.signing_keys', 0))",
        )
        .execute(conn)
        .await?;
        diesel::update(signing_keys::table.filter(signing_keys::retire_after.is_null()))
            .set((
                signing_keys::retire_after.eq(now),
                signing_keys::not_after.eq(now + token_lifetime),
            ))
            .execute(conn)
            .await?;
        diesel::insert_into(signing_keys::table)
            .values(&key)
            .returning(SigningKeyRow::as_returning())
            .get_result(conn)
            .await
    })
    .await
}

/// The key that signs now: the newest one not retired.
///
/// # Errors
/// A database error.
pub async fn current_signing_key(
    conn: &mut AsyncPgConnection,
) -> Result<Option<SigningKeyRow>, DieselError> {
    signing_keys::table
        .filter(signing_keys::retire_after.is_null())
        .order(signing_keys::create_time.desc())
        .select(SigningKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Every signing key, newest first.
///
/// # Errors
/// A database error.
pub async fn all_signing_keys(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<SigningKeyRow>, DieselError> {
    signing_keys::table
        .order(signing_keys::create_time.desc())
        .select(SigningKeyRow::as_select())
        .load(conn)
        .await
}

/// The keys the JWKS publishes at `now`: every key whose tokens may still be
/// valid, newest first.
///
/// # Errors
/// A database error.
pub async fn published_signing_keys(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<SigningKeyRow>, DieselError> {
    signing_keys::table
        .filter(
            signing_keys::not_after
                .is_null()
                .or(signing_keys::not_after.gt(now)),
        )
        .order(signing_keys::create_time.desc())
        .select(SigningKeyRow::as_select())
        .load(conn)
        .await
}

#[cfg(test)]
mod tests {
    use safra::data::db;
    use safra_test_support::TestDatabase;

    use super::*;

    fn test_event(row: &UserRow) -> OutboxEvent {
        OutboxEvent::new(
            "accounts",
            format!("user:{}", row.id),
            &safra::events::v1::UserRegistered::default(),
        )
    }

    fn new_user<'a>(email: &'a str, role: &'a str) -> NewUser<'a> {
        NewUser {
            id: Uuid::new_v4(),
            email,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            display_name: "Ana",
            role,
        }
    }

    async fn database() -> (TestDatabase, AsyncPgConnection) {
        let database = TestDatabase::migrated("accounts", &crate::MIGRATIONS)
            .await
            .expect("an accounts database");
        let conn = db::connect_once(database.url().expose())
            .await
            .expect("connect");
        (database, conn)
    }

    fn sealed(kid: &str) -> NewSigningKey<'_> {
        NewSigningKey {
            kid,
            public_key: b"public",
            private_key_ciphertext: b"sealed private key",
            nonce: b"nonce-twelve",
        }
    }

    #[tokio::test]
    async fn rotation_retires_the_old_key_and_publishes_it_until_its_tokens_expire() {
        let (_database, mut conn) = database().await;
        let lifetime = chrono::Duration::minutes(15);
        let start = Utc::now();
        rotate_signing_key(&mut conn, &sealed("key-1"), start, lifetime)
            .await
            .expect("first key");
        assert_eq!(
            current_signing_key(&mut conn)
                .await
                .expect("query")
                .map(|key| key.kid),
            Some("key-1".to_owned())
        );
        rotate_signing_key(&mut conn, &sealed("key-2"), start, lifetime)
            .await
            .expect("second key");
        assert_eq!(
            current_signing_key(&mut conn)
                .await
                .expect("query")
                .map(|key| key.kid),
            Some("key-2".to_owned()),
            "new tokens use the new key"
        );
        let published =
            |keys: Vec<SigningKeyRow>| keys.into_iter().map(|key| key.kid).collect::<Vec<_>>();
        assert_eq!(
            published(
                published_signing_keys(&mut conn, start)
                    .await
                    .expect("query")
            ),
            ["key-2", "key-1"],
            "the old key stays while its tokens may be valid"
        );
        assert_eq!(
            published(
                published_signing_keys(&mut conn, start + lifetime + chrono::Duration::seconds(1))
                    .await
                    .expect("query")
            ),
            ["key-2"],
            "then it leaves the JWKS"
        );
    }

    async fn session(conn: &mut AsyncPgConnection) -> (Uuid, Vec<u8>) {
        let user = insert_user(
            conn,
            &new_user("ana@fazenda.com.br", "investor"),
            test_event,
        )
        .await
        .expect("user");
        let token = b"first-token-hash-0123456789abcdef".to_vec();
        insert_refresh_token(
            conn,
            &NewRefreshToken {
                family_id: Uuid::new_v4(),
                user_id: user.id,
                token_hash: &token,
                expires_at: Utc::now() + chrono::Duration::days(30),
            },
        )
        .await
        .expect("token");
        (user.id, token)
    }

    #[tokio::test]
    async fn a_refresh_token_rotates_once_and_its_reuse_revokes_the_family() {
        let (_database, mut conn) = database().await;
        let (user, first) = session(&mut conn).await;
        let later = Utc::now() + chrono::Duration::days(30);
        let second = b"second-token-hash-0123456789abcdef".to_vec();
        assert_eq!(
            rotate_refresh_token(&mut conn, &first, &second, later, Utc::now())
                .await
                .expect("rotate"),
            Rotation::Rotated { user_id: user }
        );
        let third = b"third-token-hash-0123456789abcdef".to_vec();
        assert_eq!(
            rotate_refresh_token(&mut conn, &first, &third, later, Utc::now())
                .await
                .expect("replay"),
            Rotation::Reused,
            "the first token was already used"
        );
        assert_eq!(
            rotate_refresh_token(&mut conn, &second, &third, later, Utc::now())
                .await
                .expect("after"),
            Rotation::Invalid,
            "its successor died with the family"
        );
    }

    #[tokio::test]
    async fn two_rotations_at_once_leave_exactly_one_signing_key() {
        let (database, mut conn) = database().await;
        let lifetime = chrono::Duration::minutes(15);
        rotate_signing_key(&mut conn, &sealed("key-0"), Utc::now(), lifetime)
            .await
            .expect("first key");
        let mut a = db::connect_once(database.url().expose()).await.expect("a");
        let mut b = db::connect_once(database.url().expose()).await.expect("b");
        let (key_a, key_b) = (sealed("key-a"), sealed("key-b"));
        let (one, two) = tokio::join!(
            rotate_signing_key(&mut a, &key_a, Utc::now(), lifetime),
            rotate_signing_key(&mut b, &key_b, Utc::now(), lifetime),
        );
        one.expect("a rotated");
        two.expect("b rotated");
        let signing: Vec<String> = all_signing_keys(&mut conn)
            .await
            .expect("query")
            .into_iter()
            .filter(|key| key.retire_after.is_none())
            .map(|key| key.kid)
            .collect();
        assert_eq!(signing.len(), 1, "{signing:?}");
    }

    #[tokio::test]
    async fn two_concurrent_refreshes_with_one_token_yield_one_rotation_and_a_revoked_family() {
        let (database, mut conn) = database().await;
        let (_, first) = session(&mut conn).await;
        let later = Utc::now() + chrono::Duration::days(30);
        let mut a = db::connect_once(database.url().expose()).await.expect("a");
        let mut b = db::connect_once(database.url().expose()).await.expect("b");
        let (one, two) = tokio::join!(
            rotate_refresh_token(
                &mut a,
                &first,
                b"successor-a-0123456789abcdef",
                later,
                Utc::now()
            ),
            rotate_refresh_token(
                &mut b,
                &first,
                b"successor-b-0123456789abcdef",
                later,
                Utc::now()
            ),
        );
        let outcomes = [one.expect("a ran"), two.expect("b ran")];
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Rotation::Rotated { .. }))
                .count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|o| **o == Rotation::Reused).count(),
            1,
            "{outcomes:?}"
        );
        for successor in [
            b"successor-a-0123456789abcdef",
            b"successor-b-0123456789abcdef",
        ] {
            let outcome = rotate_refresh_token(
                &mut conn,
                successor,
                b"next-0123456789abcdef",
                later,
                Utc::now(),
            )
            .await
            .expect("ran");
            assert_eq!(outcome, Rotation::Invalid, "the whole family is revoked");
        }
    }

    #[tokio::test]
    async fn logout_revokes_the_family() {
        let (_database, mut conn) = database().await;
        let (_, first) = session(&mut conn).await;
        assert!(
            revoke_family_of(&mut conn, &first, Utc::now())
                .await
                .expect("logout")
        );
        assert!(
            !revoke_family_of(&mut conn, b"unknown-0123456789abcdef", Utc::now())
                .await
                .expect("unknown")
        );
        let outcome = rotate_refresh_token(
            &mut conn,
            &first,
            b"after-logout-0123456789abcdef",
            Utc::now() + chrono::Duration::days(1),
            Utc::now(),
        )
        .await
        .expect("ran");
        assert_eq!(outcome, Rotation::Invalid);
    }

    #[tokio::test]
    async fn failures_lock_after_the_free_ones_doubling_and_reset_after_the_window() {
        let (_database, mut conn) = database().await;
        let key = "email:ana@x.io".to_owned();
        let window = chrono::Duration::minutes(15);
        // PostgreSQL keeps microseconds; so does this instant.
        let start = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now");
        for _ in 0..5 {
            record_failure(&mut conn, &key, start, 5, window, window)
                .await
                .expect("failure");
        }
        assert_eq!(
            locked_until(&mut conn, std::slice::from_ref(&key), start)
                .await
                .expect("query"),
            None,
            "five failures are free"
        );
        record_failure(&mut conn, &key, start, 5, window, window)
            .await
            .expect("sixth");
        let first = locked_until(&mut conn, std::slice::from_ref(&key), start)
            .await
            .expect("query")
            .expect("locked");
        assert_eq!((first - start).num_seconds(), 1);
        record_failure(&mut conn, &key, start, 5, window, window)
            .await
            .expect("seventh");
        let second = locked_until(&mut conn, std::slice::from_ref(&key), start)
            .await
            .expect("query")
            .expect("locked");
        assert_eq!((second - start).num_seconds(), 2, "the lock doubles");

        let much_later = start + window + chrono::Duration::minutes(1);
        record_failure(&mut conn, &key, much_later, 5, window, window)
            .await
            .expect("fresh");
        assert_eq!(
            locked_until(&mut conn, std::slice::from_ref(&key), much_later)
                .await
                .expect("query"),
            None,
            "old failures are forgotten"
        );
        clear_failures(&mut conn, &key).await.expect("cleared");
    }

    #[tokio::test]
    async fn a_user_is_stored_and_found_by_email_and_id() {
        let (_database, mut conn) = database().await;
        let stored = insert_user(
            &mut conn,
            &new_user("ana@fazenda.com.br", "producer"),
            test_event,
        )
        .await
        .expect("stored");
        let by_email = user_by_email(&mut conn, "ana@fazenda.com.br")
            .await
            .expect("query");
        assert_eq!(by_email.as_ref(), Some(&stored));
        assert_eq!(
            user_by_id(&mut conn, stored.id).await.expect("query"),
            Some(stored)
        );
        assert_eq!(
            user_by_email(&mut conn, "nobody@x.io")
                .await
                .expect("query"),
            None
        );
    }

    #[tokio::test]
    async fn a_second_registration_of_an_email_is_refused() {
        let (_database, mut conn) = database().await;
        insert_user(
            &mut conn,
            &new_user("ana@fazenda.com.br", "producer"),
            test_event,
        )
        .await
        .expect("first");
        let second = insert_user(
            &mut conn,
            &new_user("ana@fazenda.com.br", "investor"),
            test_event,
        )
        .await;
        assert!(matches!(second, Err(StoreError::EmailTaken)), "{second:?}");
    }

    #[tokio::test]
    async fn users_page_newest_first_by_keyset_and_filter_by_role() {
        let (_database, mut conn) = database().await;
        for index in 0..5 {
            let email = format!("user{index}@x.io");
            let role = if index % 2 == 0 {
                "investor"
            } else {
                "producer"
            };
            insert_user(&mut conn, &new_user(&email, role), test_event)
                .await
                .expect("stored");
        }
        let first = list_users(&mut conn, None, None, 2).await.expect("page 1");
        let last = first.last().expect("two users");
        let second = list_users(&mut conn, None, Some((last.create_time, last.id)), 10)
            .await
            .expect("page 2");
        assert_eq!(first.len() + second.len(), 5);
        let mut seen: Vec<Uuid> = first.iter().chain(&second).map(|user| user.id).collect();
        seen.dedup();
        assert_eq!(seen.len(), 5, "no user twice across pages");
        let investors = list_users(&mut conn, Some("investor"), None, 10)
            .await
            .expect("filter");
        assert_eq!(investors.len(), 3);
        assert!(investors.iter().all(|user| user.role == "investor"));
    }
}
