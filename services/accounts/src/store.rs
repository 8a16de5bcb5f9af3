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
    domain::{AccountsError, BudgetScope, GuessBudget},
    schema::{login_budgets, login_known_addresses, refresh_tokens, signing_keys, users},
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

/// A guess drawn from the budget stored under `key`.
#[derive(Debug, Clone)]
pub struct Draw {
    /// `<scope>:<who>`.
    pub key: String,
    /// Which budget it is.
    pub scope: BudgetScope,
    /// Its size and rate.
    pub budget: GuessBudget,
}

/// What drawing a guess came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drawn {
    /// Every budget gave one guess.
    Taken,
    /// `scope`'s budget is spent; a guess can be drawn again after `wait`.
    /// Nothing was taken from any budget.
    Refused {
        /// The spent budget (the one with the longest wait).
        scope: BudgetScope,
        /// Until a guess can be drawn.
        wait: std::time::Duration,
    },
}

#[derive(QueryableByName)]
struct BudgetRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    key: String,
    #[diesel(sql_type = diesel::sql_types::Double)]
    tokens: f64,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    refreshed_at: DateTime<Utc>,
}

/// Draws one guess from each of `draws` at `now`, or none if any is spent.
/// The rows are locked in key order for the transaction, so of any number
/// of concurrent draws on any number of replicas no more than a budget holds
/// are taken.
///
/// # Errors
/// A database error.
pub async fn draw_guess(
    conn: &mut AsyncPgConnection,
    draws: &[Draw],
    now: DateTime<Utc>,
) -> Result<Drawn, DieselError> {
    use diesel::sql_types::{Array, Double, Text, Timestamptz};

    let mut draws = draws.to_vec();
    draws.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<String> = draws.iter().map(|draw| draw.key.clone()).collect();
    let bursts: Vec<f64> = draws.iter().map(|draw| draw.budget.burst).collect();
    conn.transaction(async move |conn| {
        // A missing budget is a full one; rows are made in key order so
        // concurrent makers wait on each other instead of deadlocking.
        Statement::new(
            "INSERT INTO login_budgets (key, tokens, refreshed_at) \
             SELECT key, burst, $3 FROM unnest($1, $2) AS wanted(key, burst) ORDER BY key \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind::<Array<Text>, _>(&keys)
        .bind::<Array<Double>, _>(&bursts)
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await?;
        let rows: Vec<BudgetRow> = Statement::new(
            "SELECT key, tokens, refreshed_at FROM login_budgets \
             WHERE key = ANY($1) ORDER BY key FOR UPDATE",
        )
        .bind::<Array<Text>, _>(&keys)
        .load(conn)
        .await?;
        let mut left = Vec::with_capacity(rows.len());
        let mut refused: Option<(BudgetScope, std::time::Duration)> = None;
        for draw in &draws {
            let Some(row) = rows.iter().find(|row| row.key == draw.key) else {
                continue;
            };
            let elapsed = (now - row.refreshed_at).to_std().unwrap_or_default();
            match draw.budget.take(draw.budget.refilled(row.tokens, elapsed)) {
                Ok(tokens) => left.push(tokens),
                Err(wait) => {
                    if refused.is_none_or(|(_, longest)| wait > longest) {
                        refused = Some((draw.scope, wait));
                    }
                }
            }
        }
        if let Some((scope, wait)) = refused {
            return Ok(Drawn::Refused { scope, wait });
        }
        Statement::new(
            "UPDATE login_budgets AS b SET tokens = drawn.tokens, refreshed_at = $3 \
             FROM unnest($1, $2) AS drawn(key, tokens) WHERE b.key = drawn.key",
        )
        .bind::<Array<Text>, _>(&keys)
        .bind::<Array<Double>, _>(&left)
        .bind::<Timestamptz, _>(now)
        .execute(conn)
        .await?;
        Ok(Drawn::Taken)
    })
    .await
}

/// Gives back the guess drawn from each of `draws` (the login succeeded:
/// only failures spend a budget).
///
/// # Errors
/// A database error.
pub async fn return_guess(conn: &mut AsyncPgConnection, draws: &[Draw]) -> Result<(), DieselError> {
    use diesel::sql_types::{Array, Double, Text};

    let keys: Vec<&str> = draws.iter().map(|draw| draw.key.as_str()).collect();
    let bursts: Vec<f64> = draws.iter().map(|draw| draw.budget.burst).collect();
    Statement::new(
        "UPDATE login_budgets AS b SET tokens = least(b.tokens + 1, drawn.burst) \
         FROM unnest($1, $2) AS drawn(key, burst) WHERE b.key = drawn.key",
    )
    .bind::<Array<Text>, _>(&keys)
    .bind::<Array<Double>, _>(&bursts)
    .execute(conn)
    .await
    .map(drop)
}

/// Whether `email` signed in from `address` since `since`.
///
/// # Errors
/// A database error.
pub async fn is_known_address(
    conn: &mut AsyncPgConnection,
    email: &str,
    address: &str,
    since: DateTime<Utc>,
) -> Result<bool, DieselError> {
    diesel::select(diesel::dsl::exists(
        login_known_addresses::table
            .filter(login_known_addresses::email.eq(email))
            .filter(login_known_addresses::address.eq(address))
            .filter(login_known_addresses::last_login.gt(since)),
    ))
    .get_result(conn)
    .await
}

/// Remembers that `email` signed in from `address` at `now`.
///
/// # Errors
/// A database error.
pub async fn remember_address(
    conn: &mut AsyncPgConnection,
    email: &str,
    address: &str,
    now: DateTime<Utc>,
) -> Result<(), DieselError> {
    diesel::insert_into(login_known_addresses::table)
        .values((
            login_known_addresses::email.eq(email),
            login_known_addresses::address.eq(address),
            login_known_addresses::last_login.eq(now),
        ))
        .on_conflict((login_known_addresses::email, login_known_addresses::address))
        .do_update()
        .set(login_known_addresses::last_login.eq(now))
        .execute(conn)
        .await
        .map(drop)
}

/// Deletes budgets untouched since `full_before` (full again, as a missing
/// row is) and addresses not signed in from since `known_since`.
///
/// # Errors
/// A database error.
pub async fn sweep_login_state(
    conn: &mut AsyncPgConnection,
    full_before: DateTime<Utc>,
    known_since: DateTime<Utc>,
) -> Result<(), DieselError> {
    diesel::delete(login_budgets::table.filter(login_budgets::refreshed_at.lt(full_before)))
        .execute(conn)
        .await?;
    diesel::delete(
        login_known_addresses::table.filter(login_known_addresses::last_login.lt(known_since)),
    )
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

    fn draw(key: &str, scope: BudgetScope, burst: f64) -> Draw {
        Draw {
            key: key.to_owned(),
            scope,
            budget: GuessBudget {
                burst,
                refill: std::time::Duration::from_secs(60),
            },
        }
    }

    #[tokio::test]
    async fn a_guess_is_drawn_from_every_budget_or_from_none_and_comes_back_on_success() {
        let (_database, mut conn) = database().await;
        // PostgreSQL keeps microseconds; so does this instant.
        let start = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now");
        let pair = draw("pair:ana@x.io 10.0.0.1", BudgetScope::Pair, 2.0);
        let address = draw("address:10.0.0.1", BudgetScope::Address, 3.0);
        let both = [pair.clone(), address.clone()];
        for _ in 0..2 {
            assert_eq!(
                draw_guess(&mut conn, &both, start).await.expect("drawn"),
                Drawn::Taken
            );
        }
        assert_eq!(
            draw_guess(&mut conn, &both, start).await.expect("drawn"),
            Drawn::Refused {
                scope: BudgetScope::Pair,
                wait: std::time::Duration::from_secs(60)
            }
        );
        // The refused draw took nothing from the address: one guess is left.
        let other_pair = draw("pair:bo@x.io 10.0.0.1", BudgetScope::Pair, 2.0);
        let elsewhere = [other_pair.clone(), address.clone()];
        assert_eq!(
            draw_guess(&mut conn, &elsewhere, start)
                .await
                .expect("drawn"),
            Drawn::Taken
        );
        assert!(matches!(
            draw_guess(&mut conn, &elsewhere, start)
                .await
                .expect("drawn"),
            Drawn::Refused {
                scope: BudgetScope::Address,
                ..
            }
        ));
        // A success gives its guess back; a minute earns one more.
        return_guess(&mut conn, &elsewhere).await.expect("returned");
        assert_eq!(
            draw_guess(&mut conn, &elsewhere, start)
                .await
                .expect("drawn"),
            Drawn::Taken
        );
        let later = start + chrono::Duration::seconds(60);
        assert_eq!(
            draw_guess(&mut conn, &both, later).await.expect("drawn"),
            Drawn::Taken
        );

        // Swept once full again; a missing row is a full budget.
        sweep_login_state(&mut conn, later + chrono::Duration::seconds(1), later)
            .await
            .expect("swept");
        let left: i64 = login_budgets::table
            .count()
            .get_result(&mut conn)
            .await
            .expect("count");
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn concurrent_draws_take_no_more_guesses_than_the_budget_holds() {
        let (database, _conn) = database().await;
        let now = Utc::now();
        let budget = [draw("pair:ana@x.io 10.0.0.1", BudgetScope::Pair, 5.0)];
        let mut draws = tokio::task::JoinSet::new();
        for _ in 0..24 {
            let url = database.url().expose().to_owned();
            let budget = budget.clone();
            draws.spawn(async move {
                let mut conn = db::connect_once(&url).await.expect("connect");
                draw_guess(&mut conn, &budget, now).await.expect("drawn")
            });
        }
        let taken = draws
            .join_all()
            .await
            .into_iter()
            .filter(|drawn| *drawn == Drawn::Taken)
            .count();
        assert_eq!(taken, 5);
    }

    #[tokio::test]
    async fn an_address_is_known_after_a_sign_in_until_it_is_swept() {
        let (_database, mut conn) = database().await;
        let now = Utc::now();
        let month_ago = now - chrono::Duration::days(30);
        assert!(
            !is_known_address(&mut conn, "ana@x.io", "10.0.0.1", month_ago)
                .await
                .expect("read")
        );
        remember_address(&mut conn, "ana@x.io", "10.0.0.1", now)
            .await
            .expect("remembered");
        remember_address(&mut conn, "ana@x.io", "10.0.0.1", now)
            .await
            .expect("again");
        assert!(
            is_known_address(&mut conn, "ana@x.io", "10.0.0.1", month_ago)
                .await
                .expect("read")
        );
        assert!(
            !is_known_address(&mut conn, "ana@x.io", "10.0.0.2", month_ago)
                .await
                .expect("read")
        );
        sweep_login_state(&mut conn, now, now + chrono::Duration::seconds(1))
            .await
            .expect("swept");
        assert!(
            !is_known_address(&mut conn, "ana@x.io", "10.0.0.1", month_ago)
                .await
                .expect("read")
        );
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
