//! The wallet database's queries (diesel-async): wallets opened on first
//! use, ledger transactions recorded with their two entries under the
//! wallet's row lock (so the balance check, the idempotency look-up and the
//! balance after are exact), statements, and installment payments with
//! their PaymentConfirmed event in the same transaction.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{BigInt, Nullable, Text, Uuid as SqlUuid},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use safra::{
    data::db::{self, DbError},
    data::outbox::OutboxEvent,
    data::paging::Keyset,
    data::statement::Statement,
};
use uuid::Uuid;

use crate::{
    domain::{self, CURRENCY, Kind, Movement, WalletError},
    schema::{installment_payments, ledger_entries, ledger_transactions, wallets},
};

/// Database failures reach the service's error as `DbError`, and the rules
/// the database enforces as the domain's errors, so that only this file
/// names diesel.
impl From<DieselError> for WalletError {
    fn from(error: DieselError) -> Self {
        if let DieselError::DatabaseError(kind, info) = &error {
            match (kind, info.constraint_name()) {
                (_, Some("ledger_clearing_covered")) => return WalletError::ClearingShort,
                (_, Some("wallets_balance_non_negative")) => {
                    return WalletError::InsufficientFunds { balance: 0 };
                }
                (DatabaseErrorKind::Unknown, None) if info.message().contains("out of range") => {
                    return WalletError::Overflow;
                }
                _ => {}
            }
        }
        WalletError::Database(DbError::Query(error))
    }
}

/// A user's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = wallets)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct WalletRow {
    /// Its id.
    pub id: Uuid,
    /// Its owner (always set for the wallets this file returns).
    pub owner_id: Option<Uuid>,
    /// Always BRL.
    pub currency_code: String,
    /// The sum of its entries.
    pub balance_minor: i64,
    /// When it was opened.
    pub create_time: DateTime<Utc>,
    /// When its balance last changed.
    pub update_time: DateTime<Utc>,
}

/// One ledger transaction as seen from the user's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct TransactionRow {
    /// The ledger transaction.
    pub id: Uuid,
    /// Its stored kind.
    pub kind: String,
    /// The user it was made for.
    pub owner_id: Uuid,
    /// The offering involved.
    pub offering_id: Option<Uuid>,
    /// What it paid for.
    pub reference_id: Option<Uuid>,
    /// The key it was made under.
    pub idempotency_key: String,
    /// When it was recorded.
    pub create_time: DateTime<Utc>,
    /// The user's wallet.
    pub wallet_id: Uuid,
    /// The signed change to that wallet.
    pub amount_minor: i64,
    /// Its currency.
    pub currency_code: String,
    /// The wallet's balance right after.
    pub balance_after_minor: Option<i64>,
}

impl TransactionRow {
    /// Where a page ends, for keyset paging.
    #[must_use]
    pub fn keyset(&self) -> Keyset {
        Keyset {
            time: self.create_time,
            id: self.id,
        }
    }
}

type TransactionColumns = (
    ledger_transactions::id,
    ledger_transactions::kind,
    ledger_transactions::owner_id,
    ledger_transactions::offering_id,
    ledger_transactions::reference_id,
    ledger_transactions::idempotency_key,
    ledger_transactions::create_time,
    ledger_entries::wallet_id,
    ledger_entries::amount_minor,
    ledger_entries::currency_code,
    ledger_entries::balance_after_minor,
);

const TRANSACTION_COLUMNS: TransactionColumns = (
    ledger_transactions::id,
    ledger_transactions::kind,
    ledger_transactions::owner_id,
    ledger_transactions::offering_id,
    ledger_transactions::reference_id,
    ledger_transactions::idempotency_key,
    ledger_transactions::create_time,
    ledger_entries::wallet_id,
    ledger_entries::amount_minor,
    ledger_entries::currency_code,
    ledger_entries::balance_after_minor,
);

/// The wallet of `owner`, opened with a zero balance if it has none (a
/// wallet that exists is only read).
///
/// # Errors
/// A database error.
pub async fn wallet_of(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
) -> Result<WalletRow, WalletError> {
    if let Some(wallet) = find_wallet(conn, owner, false).await? {
        return Ok(wallet);
    }
    open_wallet(conn, owner).await?;
    find_wallet(conn, owner, false)
        .await?
        .ok_or_else(|| WalletError::Internal("an opened wallet cannot be read".into()))
}

/// The wallet of `owner`, if it has one; `lock` holds it until the
/// transaction ends.
async fn find_wallet(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    lock: bool,
) -> Result<Option<WalletRow>, DieselError> {
    let query = wallets::table
        .filter(wallets::owner_id.eq(owner))
        .select(WalletRow::as_select());
    if lock {
        query.for_no_key_update().first(conn).await.optional()
    } else {
        query.first(conn).await.optional()
    }
}

async fn open_wallet(conn: &mut AsyncPgConnection, owner: Uuid) -> Result<(), DieselError> {
    diesel::insert_into(wallets::table)
        .values((
            wallets::owner_id.eq(owner),
            wallets::currency_code.eq(CURRENCY),
        ))
        .on_conflict(wallets::owner_id)
        .do_nothing()
        .execute(conn)
        .await
        .map(drop)
}

/// The wallet of `owner`, opened if missing, locked until the transaction
/// ends: movements of one wallet queue here, so what is read next is what
/// the movement applies to.
async fn lock_wallet(conn: &mut AsyncPgConnection, owner: Uuid) -> Result<WalletRow, WalletError> {
    if let Some(wallet) = find_wallet(conn, owner, true).await? {
        return Ok(wallet);
    }
    open_wallet(conn, owner).await?;
    find_wallet(conn, owner, true)
        .await?
        .ok_or_else(|| WalletError::Internal("an opened wallet cannot be locked".into()))
}

/// The transaction made for `owner` of `kind` under `key`, if any.
async fn by_key(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    kind: Kind,
    key: &str,
    wallet: Uuid,
) -> Result<Option<TransactionRow>, DieselError> {
    ledger_transactions::table
        .inner_join(ledger_entries::table)
        .filter(ledger_transactions::owner_id.eq(owner))
        .filter(ledger_transactions::kind.eq(kind.as_str()))
        .filter(ledger_transactions::idempotency_key.eq(key))
        .filter(ledger_entries::wallet_id.eq(wallet))
        .select(TRANSACTION_COLUMNS)
        .first(conn)
        .await
        .optional()
}

/// Records `movement` in its own database transaction (see [`record_in`]).
///
/// # Errors
/// See [`record_in`].
pub async fn record(
    conn: &mut AsyncPgConnection,
    movement: &Movement,
) -> Result<(WalletRow, TransactionRow), WalletError> {
    let movement = movement.clone();
    conn.transaction(async move |conn| record_in(conn, &movement).await)
        .await
}

/// Records `movement` inside the caller's transaction: the wallet is
/// locked, a movement already made under the same key is returned as it
/// was (or refused if it was a different request), else a ledger
/// transaction with its two entries is written. Returns the wallet after it.
///
/// Four statements on the usual path (lock, transaction, entries, and the
/// caller's commit): the key is looked up only when the insert finds it
/// taken or the balance refuses the movement (a repeat of a movement made
/// when the balance allowed it is still answered with that movement), and
/// the wallet is not read back (its trigger sets what this computes).
///
/// # Errors
/// [`WalletError::KeyReused`], [`WalletError::InsufficientFunds`],
/// [`WalletError::Overflow`], [`WalletError::ClearingShort`] (at commit) or
/// a database error.
pub async fn record_in(
    conn: &mut AsyncPgConnection,
    movement: &Movement,
) -> Result<(WalletRow, TransactionRow), WalletError> {
    let wallet = lock_wallet(conn, movement.owner).await?;
    let delta = movement.kind.signed(movement.amount);
    let after = match domain::balance_after(wallet.balance_minor, delta) {
        Ok(after) => after,
        Err(refused) => {
            return match earlier_movement(conn, movement, wallet.id).await? {
                Some(earlier) => Ok((wallet, earlier)),
                None => Err(refused),
            };
        }
    };
    let id = Uuid::new_v4();
    let inserted: Option<DateTime<Utc>> = diesel::insert_into(ledger_transactions::table)
        .values((
            ledger_transactions::id.eq(id),
            ledger_transactions::kind.eq(movement.kind.as_str()),
            ledger_transactions::owner_id.eq(movement.owner),
            ledger_transactions::offering_id.eq(movement.offering),
            ledger_transactions::reference_id.eq(movement.reference),
            ledger_transactions::idempotency_key.eq(&movement.idempotency_key),
        ))
        .on_conflict_do_nothing()
        .returning(ledger_transactions::create_time)
        .get_result(conn)
        .await
        .optional()?;
    let Some(create_time) = inserted else {
        // The key is taken: by this very request made before, or by another.
        return match earlier_movement(conn, movement, wallet.id).await? {
            Some(earlier) => Ok((wallet, earlier)),
            None => Err(WalletError::KeyReused),
        };
    };
    // The user's entry and the counter account's, found by its name in the
    // same statement.
    Statement::new(
        "INSERT INTO ledger_entries \
             (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor) \
         VALUES ($1, $2, $3, $4, $5), \
                ($1, (SELECT id FROM wallets WHERE system_account = $6), -$3, $4, NULL)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(wallet.id)
    .bind::<BigInt, _>(delta)
    .bind::<Text, _>(CURRENCY)
    .bind::<Nullable<BigInt>, _>(Some(after))
    .bind::<Text, _>(movement.kind.counter_account())
    .execute(conn)
    .await?;
    // What the entries' trigger wrote: the balance, and `now()` (the
    // transaction's time, as the ledger transaction's create_time).
    let wallet = WalletRow {
        balance_minor: after,
        update_time: create_time,
        ..wallet
    };
    let row = TransactionRow {
        id,
        kind: movement.kind.as_str().to_owned(),
        owner_id: movement.owner,
        offering_id: movement.offering,
        reference_id: movement.reference,
        idempotency_key: movement.idempotency_key.clone(),
        create_time,
        wallet_id: wallet.id,
        amount_minor: delta,
        currency_code: CURRENCY.to_owned(),
        balance_after_minor: Some(after),
    };
    Ok((wallet, row))
}

/// The movement made earlier under `movement`'s key, when it was the same
/// request.
///
/// # Errors
/// [`WalletError::KeyReused`] when the key was used for another request.
async fn earlier_movement(
    conn: &mut AsyncPgConnection,
    movement: &Movement,
    wallet: Uuid,
) -> Result<Option<TransactionRow>, WalletError> {
    match by_key(
        conn,
        movement.owner,
        movement.kind,
        &movement.idempotency_key,
        wallet,
    )
    .await?
    {
        Some(earlier)
            if movement.repeats(
                earlier.amount_minor,
                earlier.offering_id,
                earlier.reference_id,
            ) =>
        {
            Ok(Some(earlier))
        }
        Some(_) => Err(WalletError::KeyReused),
        None => Ok(None),
    }
}

/// One page of `owner`'s transactions, newest first, optionally of one
/// kind, after `after`.
///
/// # Errors
/// A database error.
pub async fn list_transactions(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    kind: Option<Kind>,
    after: Option<Keyset>,
    limit: usize,
) -> Result<Vec<TransactionRow>, WalletError> {
    let wallet = wallet_of(conn, owner).await?;
    let mut query = ledger_transactions::table
        .inner_join(ledger_entries::table)
        .filter(ledger_entries::wallet_id.eq(wallet.id))
        .select(TRANSACTION_COLUMNS)
        .order((
            ledger_transactions::create_time.desc(),
            ledger_transactions::id.desc(),
        ))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .into_boxed();
    if let Some(kind) = kind {
        query = query.filter(ledger_transactions::kind.eq(kind.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(db::older_than(
            ledger_transactions::create_time,
            ledger_transactions::id,
            after,
        ));
    }
    Ok(query.load(conn).await?)
}

/// A stored installment payment.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = installment_payments)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct PaymentRow {
    /// Its id.
    pub id: Uuid,
    /// The offering paid.
    pub offering_id: Uuid,
    /// Which installment.
    pub installment_number: i32,
    /// The producer who paid.
    pub payer_id: Uuid,
    /// The amount.
    pub amount_minor: i64,
    /// Its currency.
    pub currency_code: String,
    /// The ledger transaction.
    pub transaction_id: Uuid,
    /// The payer's key.
    pub idempotency_key: String,
    /// When it was paid.
    pub create_time: DateTime<Utc>,
}

/// The payment `payer` made under `key`, if any.
///
/// # Errors
/// A database error.
pub async fn payment_by_key(
    conn: &mut AsyncPgConnection,
    payer: Uuid,
    key: &str,
) -> Result<Option<PaymentRow>, WalletError> {
    Ok(installment_payments::table
        .filter(installment_payments::payer_id.eq(payer))
        .filter(installment_payments::idempotency_key.eq(key))
        .select(PaymentRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

async fn payment_of(
    conn: &mut AsyncPgConnection,
    offering: Uuid,
    number: i32,
) -> Result<Option<PaymentRow>, DieselError> {
    installment_payments::table
        .filter(installment_payments::offering_id.eq(offering))
        .filter(installment_payments::installment_number.eq(number))
        .select(PaymentRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The transaction `id` as seen from `owner`'s wallet.
///
/// # Errors
/// A database error, or none such.
pub async fn transaction(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    id: Uuid,
) -> Result<TransactionRow, WalletError> {
    let wallet = wallet_of(conn, owner).await?;
    Ok(ledger_transactions::table
        .inner_join(ledger_entries::table)
        .filter(ledger_transactions::id.eq(id))
        .filter(ledger_entries::wallet_id.eq(wallet.id))
        .select(TRANSACTION_COLUMNS)
        .first(conn)
        .await?)
}

/// Pays installment `number` of `offering` by `movement` (the payer's
/// debit) in one transaction with the payment row and the event that
/// `confirmed` builds from it. The same key returns the first payment; an
/// installment paid under another key is refused.
///
/// # Errors
/// [`WalletError::InstallmentAlreadyPaid`], [`WalletError::KeyReused`],
/// the movement's errors, or a database error.
pub async fn pay_installment<F>(
    conn: &mut AsyncPgConnection,
    number: i32,
    movement: &Movement,
    confirmed: F,
) -> Result<(PaymentRow, TransactionRow), WalletError>
where
    F: FnOnce(&PaymentRow) -> OutboxEvent + Send,
{
    let movement = movement.clone();
    let offering = movement
        .offering
        .ok_or_else(|| WalletError::Internal("an installment payment without offering".into()))?;
    conn.transaction(async move |conn| {
        // The payer's wallet lock also serialises their payments.
        lock_wallet(conn, movement.owner).await?;
        if let Some(earlier) =
            payment_by_key(conn, movement.owner, &movement.idempotency_key).await?
        {
            if earlier.offering_id != offering || earlier.installment_number != number {
                return Err(WalletError::KeyReused);
            }
            let row = transaction(conn, movement.owner, earlier.transaction_id).await?;
            return Ok((earlier, row));
        }
        if let Some(paid) = payment_of(conn, offering, number).await? {
            return Err(WalletError::InstallmentAlreadyPaid { payment: paid.id });
        }
        let (_, row) = record_in(conn, &movement).await?;
        let payment = diesel::insert_into(installment_payments::table)
            .values((
                installment_payments::id.eq(movement.reference.unwrap_or_else(Uuid::new_v4)),
                installment_payments::offering_id.eq(offering),
                installment_payments::installment_number.eq(number),
                installment_payments::payer_id.eq(movement.owner),
                installment_payments::amount_minor.eq(movement.amount.minor()),
                installment_payments::currency_code.eq(CURRENCY),
                installment_payments::transaction_id.eq(row.id),
                installment_payments::idempotency_key.eq(&movement.idempotency_key),
            ))
            .returning(PaymentRow::as_returning())
            .get_result(conn)
            .await?;
        confirmed(&payment).write(conn).await?;
        Ok((payment, row))
    })
    .await
}
