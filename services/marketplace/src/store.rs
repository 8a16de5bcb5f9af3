//! The marketplace database's queries (diesel-async). Every change to an
//! offering's money (a reservation, a confirmation, a release, a
//! cancellation) runs in one transaction holding the offering's row lock,
//! so concurrent investors queue per offering and the totals stay exact;
//! the events describing a change are written to the outbox in the same
//! transaction. Work the background task finds (deadlines passed, pending
//! investments, payouts and refunds due) is claimed with SKIP LOCKED or
//! made idempotent, so replicas may run it at once.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::{prelude::*, result::Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use safra::data::statement::Statement;
use safra::{
    data::db::{self, DbError},
    data::outbox::OutboxEvent,
    data::paging::Keyset,
};
use uuid::Uuid;

use crate::{
    domain::{
        CURRENCY, CancelReason, InvestmentScope, MarketError, NewOffering, Status, Subscription,
        Transition,
    },
    schema::{investments, offering_installments, offerings, payouts},
};

/// Database failures reach the service's error as `DbError`, so that only
/// this file names diesel.
impl From<DieselError> for MarketError {
    fn from(error: DieselError) -> Self {
        if let DieselError::DatabaseError(_, info) = &error
            && info.constraint_name() == Some("offerings_subscribed_within_face_value")
        {
            return MarketError::ExceedsRemaining { remaining: 0 };
        }
        MarketError::Database(DbError::Query(error))
    }
}

/// A stored offering.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = offerings)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct OfferingRow {
    /// Its id.
    pub id: Uuid,
    /// Who issued it.
    pub producer_id: Uuid,
    /// lower_snake_case.
    pub commodity: String,
    /// Whole units.
    pub quantity: i64,
    /// lower_snake_case.
    pub unit: String,
    /// Centavos.
    pub face_value_minor: i64,
    /// BRL.
    pub currency_code: String,
    /// Basis points a year.
    pub annual_rate_bps: i32,
    /// Maturity.
    pub maturity_date: NaiveDate,
    /// When investments close.
    pub funding_deadline: DateTime<Utc>,
    /// Confirmed investments.
    pub raised_minor: i64,
    /// `open`, `funded`, `settled`, `cancelled`.
    pub status: String,
    /// Issued.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Held by investments under way.
    pub reserved_minor: i64,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
}

impl OfferingRow {
    /// Its state (an unknown stored value reads as cancelled: it takes
    /// nothing).
    #[must_use]
    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Cancelled)
    }

    /// What an investment in it meets.
    #[must_use]
    pub fn subscription(&self) -> Subscription {
        Subscription {
            status: self.status(),
            funding_deadline: self.funding_deadline,
            face_value_minor: self.face_value_minor,
            raised_minor: self.raised_minor,
            reserved_minor: self.reserved_minor,
        }
    }

    /// Where a page ends, for keyset paging.
    #[must_use]
    pub fn keyset(&self) -> Keyset {
        Keyset {
            time: self.create_time,
            id: self.id,
        }
    }
}

/// One installment of a stored offering.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = offering_installments)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct InstallmentRow {
    /// Its offering.
    pub offering_id: Uuid,
    /// 1-based.
    pub number: i32,
    /// When it falls due.
    pub due_date: NaiveDate,
    /// Centavos.
    pub amount_minor: i64,
    /// When it was paid, if it was.
    pub paid_time: Option<DateTime<Utc>>,
    /// When its payment reached every holder, if it did.
    pub distributed_time: Option<DateTime<Utc>>,
}

/// An offering with its schedule.
pub type OfferingWithSchedule = (OfferingRow, Vec<InstallmentRow>);

/// A stored investment.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = investments)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct InvestmentRow {
    /// Its id.
    pub id: Uuid,
    /// The offering funded.
    pub offering_id: Uuid,
    /// The investor.
    pub investor_id: Uuid,
    /// Centavos.
    pub amount_minor: i64,
    /// BRL.
    pub currency_code: String,
    /// `pending`, `confirmed`, `failed`, `refunded`.
    pub status: String,
    /// The investor's key.
    pub idempotency_key: String,
    /// The wallet's debit, once made.
    pub debit_transaction_id: Option<Uuid>,
    /// Made.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// The wallet's refund, once made.
    pub refund_transaction_id: Option<Uuid>,
}

impl InvestmentRow {
    /// Where a page ends, for keyset paging.
    #[must_use]
    pub fn keyset(&self) -> Keyset {
        Keyset {
            time: self.create_time,
            id: self.id,
        }
    }
}

/// Stores `offering` for `producer`, OPEN with nothing raised.
///
/// # Errors
/// A database error.
pub async fn insert_offering(
    conn: &mut AsyncPgConnection,
    producer: Uuid,
    offering: &NewOffering,
) -> Result<OfferingWithSchedule, MarketError> {
    let offering = offering.clone();
    conn.transaction(async move |conn| {
        let draft = &offering.draft;
        let row = diesel::insert_into(offerings::table)
            .values((
                offerings::producer_id.eq(producer),
                offerings::commodity.eq(&draft.commodity),
                offerings::quantity.eq(draft.quantity),
                offerings::unit.eq(&draft.unit),
                offerings::face_value_minor.eq(draft.face_value_minor),
                offerings::currency_code.eq(CURRENCY),
                offerings::annual_rate_bps.eq(draft.annual_rate_bps),
                offerings::maturity_date.eq(draft.maturity_date),
                offerings::funding_deadline.eq(draft.funding_deadline),
            ))
            .returning(OfferingRow::as_returning())
            .get_result(conn)
            .await?;
        let schedule: Vec<_> = offering
            .installments
            .iter()
            .map(|installment| {
                (
                    offering_installments::offering_id.eq(row.id),
                    offering_installments::number.eq(installment.number),
                    offering_installments::due_date.eq(installment.due_date),
                    offering_installments::amount_minor.eq(installment.amount_minor),
                )
            })
            .collect();
        let installments = diesel::insert_into(offering_installments::table)
            .values(&schedule)
            .returning(InstallmentRow::as_returning())
            .get_results(conn)
            .await?;
        Ok((row, installments))
    })
    .await
}

async fn schedules(
    conn: &mut AsyncPgConnection,
    rows: Vec<OfferingRow>,
) -> Result<Vec<OfferingWithSchedule>, DieselError> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let installments: Vec<InstallmentRow> = offering_installments::table
        .filter(offering_installments::offering_id.eq_any(&ids))
        .order((
            offering_installments::offering_id,
            offering_installments::number,
        ))
        .select(InstallmentRow::as_select())
        .load(conn)
        .await?;
    // One pass: the schedules arrive grouped by offering.
    let mut by_offering: std::collections::HashMap<Uuid, Vec<InstallmentRow>> =
        std::collections::HashMap::with_capacity(rows.len());
    for installment in installments {
        by_offering
            .entry(installment.offering_id)
            .or_default()
            .push(installment);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let own = by_offering.remove(&row.id).unwrap_or_default();
            (row, own)
        })
        .collect())
}

/// The offering `id` with its schedule.
///
/// # Errors
/// [`MarketError::OfferingNotFound`] or a database error.
pub async fn offering(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<OfferingWithSchedule, MarketError> {
    // One query: the offering joined with its schedule, a row per installment.
    let rows: Vec<(OfferingRow, Option<InstallmentRow>)> = offerings::table
        .left_join(offering_installments::table)
        .filter(offerings::id.eq(id))
        .order(offering_installments::number.nullable().asc())
        .select((
            OfferingRow::as_select(),
            Option::<InstallmentRow>::as_select(),
        ))
        .load(conn)
        .await?;
    let mut rows = rows.into_iter();
    let (row, first) = rows.next().ok_or(MarketError::OfferingNotFound(id))?;
    let installments = first
        .into_iter()
        .chain(rows.filter_map(|(_, installment)| installment))
        .collect();
    Ok((row, installments))
}

/// The filters of ListOfferings (unset: any).
#[derive(Debug, Clone, Default)]
pub struct OfferingFilter {
    /// In this state.
    pub status: Option<Status>,
    /// Of this commodity.
    pub commodity: Option<String>,
    /// Of this producer.
    pub producer: Option<Uuid>,
    /// Maturing on or after.
    pub min_maturity: Option<NaiveDate>,
    /// Maturing on or before.
    pub max_maturity: Option<NaiveDate>,
}

/// One page of offerings, newest first, after `after`.
///
/// # Errors
/// A database error.
pub async fn list_offerings(
    conn: &mut AsyncPgConnection,
    filter: &OfferingFilter,
    after: Option<Keyset>,
    limit: usize,
) -> Result<Vec<OfferingWithSchedule>, MarketError> {
    let mut query = offerings::table
        .select(OfferingRow::as_select())
        .order((offerings::create_time.desc(), offerings::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(offerings::status.eq(status.as_str()));
    }
    if let Some(commodity) = &filter.commodity {
        query = query.filter(offerings::commodity.eq(commodity.clone()));
    }
    if let Some(producer) = filter.producer {
        query = query.filter(offerings::producer_id.eq(producer));
    }
    if let Some(min) = filter.min_maturity {
        query = query.filter(offerings::maturity_date.ge(min));
    }
    if let Some(max) = filter.max_maturity {
        query = query.filter(offerings::maturity_date.le(max));
    }
    if let Some(after) = after {
        query = query.filter(db::older_than(offerings::create_time, offerings::id, after));
    }
    let rows = query.load(conn).await?;
    Ok(schedules(conn, rows).await?)
}

async fn lock_offering(conn: &mut AsyncPgConnection, id: Uuid) -> Result<OfferingRow, MarketError> {
    offerings::table
        .find(id)
        .select(OfferingRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(MarketError::OfferingNotFound(id))
}

/// An Invest request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvestIntent {
    /// Who invests.
    pub investor: Uuid,
    /// In what.
    pub offering: Uuid,
    /// Centavos.
    pub amount_minor: i64,
    /// The investor's key.
    pub idempotency_key: String,
}

/// What reserving an investment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// A new investment, PENDING, its amount reserved on the offering.
    New(InvestmentRow),
    /// The investment made earlier under the same key, for the same request.
    Existing(InvestmentRow),
}

/// Records `intent` as a PENDING investment and reserves its amount on the
/// offering, or finds the one made earlier under the same key.
///
/// # Errors
/// [`MarketError::KeyReused`], [`MarketError::OfferingNotFound`],
/// [`MarketError::NotOpen`], [`MarketError::ExceedsRemaining`] or a
/// database error.
pub async fn reserve(
    conn: &mut AsyncPgConnection,
    intent: &InvestIntent,
    now: DateTime<Utc>,
) -> Result<Reservation, MarketError> {
    let intent = intent.clone();
    conn.transaction(async move |conn| {
        let offering = lock_offering(conn, intent.offering).await?;
        // The key is looked up only when it matters: the offering refuses
        // (a repeat of an investment it took before is still answered with
        // it), or the insert finds the key taken.
        if let Err(refused) = offering.subscription().admit(intent.amount_minor, now) {
            return match earlier_investment(conn, &intent).await? {
                Some(earlier) => Ok(Reservation::Existing(earlier)),
                None => Err(refused),
            };
        }
        let inserted = diesel::insert_into(investments::table)
            .values((
                investments::offering_id.eq(intent.offering),
                investments::investor_id.eq(intent.investor),
                investments::amount_minor.eq(intent.amount_minor),
                investments::currency_code.eq(CURRENCY),
                investments::idempotency_key.eq(&intent.idempotency_key),
            ))
            .on_conflict((investments::investor_id, investments::idempotency_key))
            .do_nothing()
            .returning(InvestmentRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        let Some(investment) = inserted else {
            // The key is taken: by this very request made before, or by
            // another (racing on another offering's lock, say).
            return match earlier_investment(conn, &intent).await? {
                Some(earlier) => Ok(Reservation::Existing(earlier)),
                None => Err(MarketError::KeyReused),
            };
        };
        diesel::update(offerings::table.find(intent.offering))
            .set(offerings::reserved_minor.eq(offerings::reserved_minor + intent.amount_minor))
            .execute(conn)
            .await?;
        Ok(Reservation::New(investment))
    })
    .await
}

/// The investment made earlier under `intent`'s key, when it was the same
/// request.
///
/// # Errors
/// [`MarketError::KeyReused`] when the key was used for another request.
async fn earlier_investment(
    conn: &mut AsyncPgConnection,
    intent: &InvestIntent,
) -> Result<Option<InvestmentRow>, MarketError> {
    match investment_by_key(conn, intent.investor, &intent.idempotency_key).await? {
        Some(earlier)
            if earlier.offering_id == intent.offering
                && earlier.amount_minor == intent.amount_minor =>
        {
            Ok(Some(earlier))
        }
        Some(_) => Err(MarketError::KeyReused),
        None => Ok(None),
    }
}

async fn investment_by_key(
    conn: &mut AsyncPgConnection,
    investor: Uuid,
    key: &str,
) -> Result<Option<InvestmentRow>, DieselError> {
    investments::table
        .filter(investments::investor_id.eq(investor))
        .filter(investments::idempotency_key.eq(key))
        .select(InvestmentRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The investment `id`.
///
/// # Errors
/// A database error; `None` when there is none.
pub async fn investment(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<InvestmentRow>, MarketError> {
    Ok(investments::table
        .find(id)
        .select(InvestmentRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// What a confirmation changed, for the events describing it.
#[derive(Debug, Clone)]
pub struct Confirmed {
    /// The investment, CONFIRMED.
    pub investment: InvestmentRow,
    /// The offering after it.
    pub offering: OfferingRow,
    /// Whether this investment made it FUNDED.
    pub funded: bool,
    /// Every investor with a confirmed stake (when funded), by id.
    pub investors: Vec<Uuid>,
}

/// Confirms the PENDING investment `pending`, paid by the wallet transaction
/// `debit`: its reservation becomes raised money, and the offering becomes
/// FUNDED when that fills it. The events `describe` makes are written in
/// the same transaction. An investment no longer pending is returned as
/// it is (the reconciler or a retry got there first). Returns the
/// investment, and the offering when this confirmation funded it.
///
/// # Errors
/// A database error.
pub async fn confirm<F>(
    conn: &mut AsyncPgConnection,
    pending: &InvestmentRow,
    debit: Uuid,
    describe: F,
) -> Result<(InvestmentRow, Option<OfferingRow>), MarketError>
where
    F: FnOnce(&Confirmed) -> Vec<OutboxEvent> + Send,
{
    let (id, offering_id) = (pending.id, pending.offering_id);
    conn.transaction(async move |conn| {
        // The offering first, as every writer of both takes them.
        let mut offering = lock_offering(conn, offering_id).await?;
        let updated = diesel::update(
            investments::table
                .find(id)
                .filter(investments::status.eq("pending")),
        )
        .set((
            investments::status.eq("confirmed"),
            investments::debit_transaction_id.eq(debit),
        ))
        .returning(InvestmentRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(investment) = updated else {
            let current = investment(conn, id)
                .await?
                .ok_or_else(|| MarketError::Internal(format!("investment {id} vanished")))?;
            return Ok((current, None));
        };
        let raised = offering.raised_minor + investment.amount_minor;
        let fills = raised == offering.face_value_minor && offering.status() == Status::Open;
        let status = if fills {
            offering.status().after(Transition::Fund)?
        } else {
            offering.status()
        };
        offering = diesel::update(offerings::table.find(offering.id))
            .set((
                offerings::raised_minor.eq(raised),
                offerings::reserved_minor.eq(offerings::reserved_minor - investment.amount_minor),
                offerings::status.eq(status.as_str()),
            ))
            .returning(OfferingRow::as_returning())
            .get_result(conn)
            .await?;
        let investors = if fills {
            holders(conn, offering.id, None, i64::MAX)
                .await?
                .into_iter()
                .map(|(holder, _)| holder)
                .collect()
        } else {
            Vec::new()
        };
        let confirmed = Confirmed {
            investment,
            offering,
            funded: fills,
            investors,
        };
        for event in describe(&confirmed) {
            event.write(conn).await?;
        }
        Ok((confirmed.investment, fills.then_some(confirmed.offering)))
    })
    .await
}

/// Marks the PENDING investment `id` FAILED (the wallet refused the debit)
/// and releases its reservation. A no-op on one no longer pending.
///
/// # Errors
/// A database error.
pub async fn fail(conn: &mut AsyncPgConnection, id: Uuid) -> Result<InvestmentRow, MarketError> {
    conn.transaction(async move |conn| {
        let current = investment(conn, id)
            .await?
            .ok_or_else(|| MarketError::Internal(format!("investment {id} vanished")))?;
        lock_offering(conn, current.offering_id).await?;
        let updated = diesel::update(
            investments::table
                .find(id)
                .filter(investments::status.eq("pending")),
        )
        .set(investments::status.eq("failed"))
        .returning(InvestmentRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(investment) = updated else {
            return Ok(current);
        };
        diesel::update(offerings::table.find(investment.offering_id))
            .set(offerings::reserved_minor.eq(offerings::reserved_minor - investment.amount_minor))
            .execute(conn)
            .await?;
        Ok(investment)
    })
    .await
}

/// Cancels the OPEN offering `id` for `reason`, writing the events
/// `describe` makes from it and its investors in the same transaction.
/// `allowed` decides from the locked row whether the caller may.
///
/// # Errors
/// [`MarketError::TransitionNotAllowed`], whatever `allowed` returns, or a
/// database error.
pub async fn cancel<A, F>(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: CancelReason,
    allowed: A,
    describe: F,
) -> Result<OfferingWithSchedule, MarketError>
where
    A: FnOnce(&OfferingRow) -> Result<(), MarketError> + Send,
    F: FnOnce(&OfferingRow, &[Uuid]) -> OutboxEvent + Send,
{
    conn.transaction(async move |conn| {
        let locked = lock_offering(conn, id).await?;
        allowed(&locked)?;
        cancel_locked(conn, &locked, reason, describe).await?;
        offering(conn, id).await
    })
    .await
}

async fn cancel_locked<F>(
    conn: &mut AsyncPgConnection,
    offering: &OfferingRow,
    reason: CancelReason,
    describe: F,
) -> Result<(), MarketError>
where
    F: FnOnce(&OfferingRow, &[Uuid]) -> OutboxEvent,
{
    let status = offering.status().after(Transition::Cancel)?;
    let cancelled = diesel::update(offerings::table.find(offering.id))
        .set((
            offerings::status.eq(status.as_str()),
            offerings::cancel_reason.eq(reason.as_str()),
        ))
        .returning(OfferingRow::as_returning())
        .get_result(conn)
        .await?;
    let investors: Vec<Uuid> = holders(conn, offering.id, None, i64::MAX)
        .await?
        .into_iter()
        .map(|(holder, _)| holder)
        .collect();
    describe(&cancelled, &investors).write(conn).await?;
    Ok(())
}

/// Cancels up to `limit` OPEN offerings whose deadline passed before
/// `now`, each with the event `describe` makes. Rows another replica is
/// closing are skipped. Returns how many were cancelled.
///
/// # Errors
/// A database error.
pub async fn close_expired<F>(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    limit: i64,
    describe: F,
) -> Result<usize, MarketError>
where
    F: Fn(&OfferingRow, &[Uuid]) -> OutboxEvent + Send + Sync,
{
    conn.transaction(async move |conn| {
        let due: Vec<OfferingRow> = offerings::table
            .filter(offerings::status.eq(Status::Open.as_str()))
            .filter(offerings::funding_deadline.le(now))
            .order(offerings::funding_deadline)
            .limit(limit)
            .select(OfferingRow::as_select())
            .for_update()
            .skip_locked()
            .load(conn)
            .await?;
        for offering in &due {
            cancel_locked(conn, offering, CancelReason::Deadline, &describe).await?;
        }
        Ok(due.len())
    })
    .await
}

/// Up to `limit` investments PENDING since before `before`: their debit
/// may or may not have happened, and only the wallet knows.
///
/// # Errors
/// A database error.
pub async fn stale_pending(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<InvestmentRow>, MarketError> {
    Ok(investments::table
        .filter(investments::status.eq("pending"))
        .filter(investments::update_time.le(before))
        .order(investments::update_time)
        .limit(limit)
        .select(InvestmentRow::as_select())
        .load(conn)
        .await?)
}

/// Up to `limit` FUNDED offerings whose producer is not paid yet.
///
/// # Errors
/// A database error.
pub async fn payouts_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<OfferingRow>, MarketError> {
    use diesel::dsl::{exists, not};

    Ok(offerings::table
        .filter(offerings::status.eq(Status::Funded.as_str()))
        .filter(not(exists(
            payouts::table.filter(payouts::offering_id.eq(offerings::id)),
        )))
        .order(offerings::update_time)
        .limit(limit)
        .select(OfferingRow::as_select())
        .load(conn)
        .await?)
}

/// Records the producer's payout of offering `id` (once; a repeat is a
/// no-op, the wallet's key having returned the same transaction).
///
/// # Errors
/// A database error.
pub async fn record_payout(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    transaction: Uuid,
) -> Result<(), MarketError> {
    diesel::insert_into(payouts::table)
        .values((
            payouts::offering_id.eq(id),
            payouts::transaction_id.eq(transaction),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Up to `limit` CONFIRMED investments in cancelled offerings: refunds due.
///
/// # Errors
/// A database error.
pub async fn refunds_due(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<InvestmentRow>, MarketError> {
    Ok(investments::table
        .inner_join(offerings::table.on(offerings::id.eq(investments::offering_id)))
        .filter(offerings::status.eq(Status::Cancelled.as_str()))
        .filter(investments::status.eq("confirmed"))
        .order(investments::update_time)
        .limit(limit)
        .select(InvestmentRow::as_select())
        .load(conn)
        .await?)
}

/// Records the refund of investment `id`: it becomes REFUNDED.
///
/// # Errors
/// A database error.
pub async fn record_refund(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    transaction: Uuid,
) -> Result<(), MarketError> {
    diesel::update(
        investments::table
            .find(id)
            .filter(investments::status.eq("confirmed")),
    )
    .set((
        investments::status.eq("refunded"),
        investments::refund_transaction_id.eq(transaction),
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// One page of investments in `scope`, newest first, after `after`.
///
/// # Errors
/// A database error.
pub async fn list_investments(
    conn: &mut AsyncPgConnection,
    scope: InvestmentScope,
    after: Option<Keyset>,
    limit: usize,
) -> Result<Vec<InvestmentRow>, MarketError> {
    let mut query = investments::table
        .inner_join(offerings::table.on(offerings::id.eq(investments::offering_id)))
        .select(InvestmentRow::as_select())
        .order((investments::create_time.desc(), investments::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .into_boxed();
    if let Some(investor) = scope.investor {
        query = query.filter(investments::investor_id.eq(investor));
    }
    if let Some(producer) = scope.producer {
        query = query.filter(offerings::producer_id.eq(producer));
    }
    if let Some(offering) = scope.offering {
        query = query.filter(investments::offering_id.eq(offering));
    }
    if let Some(after) = after {
        query = query.filter(db::older_than(
            investments::create_time,
            investments::id,
            after,
        ));
    }
    Ok(query.load(conn).await?)
}

/// One holder's stake, as the holders query returns it.
#[derive(Debug, Clone, QueryableByName)]
struct HolderStake {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    investor_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    amount_minor: i64,
}

/// The holders of offering `id` after holder `after`, by holder id, with
/// the sum of their confirmed investments.
///
/// # Errors
/// A database error.
pub async fn holders(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Uuid, i64)>, DieselError> {
    use diesel::sql_types::{BigInt, Nullable, Uuid as SqlUuid};

    // sum(bigint) is numeric in PostgreSQL; a stake fits a bigint because
    // an offering's raised amount does.
    let rows: Vec<HolderStake> = Statement::new(
        "SELECT investor_id, sum(amount_minor)::bigint AS amount_minor \
         FROM investments \
         WHERE offering_id = $1 AND status = 'confirmed' \
           AND ($2::uuid IS NULL OR investor_id > $2) \
         GROUP BY investor_id ORDER BY investor_id LIMIT $3",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.investor_id, row.amount_minor))
        .collect())
}

/// Marks installment `number` of `offering` paid by `payment` at `time`
/// (from PaymentConfirmed). A payment already recorded is left alone.
///
/// # Errors
/// [`MarketError::Internal`] for an unknown installment (an event no
/// offering explains), or a database error.
pub async fn mark_paid(
    conn: &mut AsyncPgConnection,
    offering: Uuid,
    number: i32,
    payment: Uuid,
    time: DateTime<Utc>,
) -> Result<(), MarketError> {
    let installment = offering_installments::table.find((offering, number));
    let found = diesel::update(installment)
        .filter(offering_installments::payment_id.is_null())
        .set((
            offering_installments::payment_id.eq(payment),
            offering_installments::paid_time.eq(time),
        ))
        .execute(conn)
        .await?;
    if found == 0 && !installment_exists(conn, offering, number).await? {
        return Err(no_installment(offering, number));
    }
    Ok(())
}

/// What recording a distribution did to the offering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distributed {
    /// Installments remain to be distributed (or this one was known).
    Recorded,
    /// It was the last one: the offering is SETTLED now.
    Settled(Box<OfferingRow>),
}

/// Marks installment `number` of `offering` distributed by `distribution`
/// at `time` (from DistributionCompleted), and settles the offering when
/// no installment is left undistributed. Holds the offering's row lock,
/// so two distributions completing together settle it once. A payment the
/// marketplace had not heard of yet is recorded from the distribution.
///
/// # Errors
/// [`MarketError::OfferingNotFound`], [`MarketError::Internal`] for an
/// unknown installment,
/// [`MarketError::TransitionNotAllowed`] when the offering is not FUNDED,
/// or a database error.
pub async fn mark_distributed(
    conn: &mut AsyncPgConnection,
    offering: Uuid,
    number: i32,
    payment: Uuid,
    distribution: Uuid,
    time: DateTime<Utc>,
) -> Result<Distributed, MarketError> {
    let locked = lock_offering(conn, offering).await?;
    let changed = Statement::new(
        "UPDATE offering_installments SET distribution_id = $3, distributed_time = $4, \
                payment_id = coalesce(payment_id, $5), paid_time = coalesce(paid_time, $4) \
         WHERE offering_id = $1 AND number = $2 AND distribution_id IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(offering)
    .bind::<diesel::sql_types::Integer, _>(number)
    .bind::<diesel::sql_types::Uuid, _>(distribution)
    .bind::<diesel::sql_types::Timestamptz, _>(time)
    .bind::<diesel::sql_types::Uuid, _>(payment)
    .execute(conn)
    .await?;
    if changed == 0 && !installment_exists(conn, offering, number).await? {
        return Err(no_installment(offering, number));
    }
    let left: i64 = offering_installments::table
        .filter(offering_installments::offering_id.eq(offering))
        .filter(offering_installments::distributed_time.is_null())
        .count()
        .get_result(conn)
        .await?;
    if left > 0 || locked.status() == Status::Settled {
        return Ok(Distributed::Recorded);
    }
    let status = locked.status().after(Transition::Settle)?;
    let settled = diesel::update(offerings::table.find(offering))
        .set(offerings::status.eq(status.as_str()))
        .returning(OfferingRow::as_returning())
        .get_result(conn)
        .await?;
    Ok(Distributed::Settled(Box::new(settled)))
}

async fn installment_exists(
    conn: &mut AsyncPgConnection,
    offering: Uuid,
    number: i32,
) -> Result<bool, MarketError> {
    Ok(diesel::select(diesel::dsl::exists(
        offering_installments::table.find((offering, number)),
    ))
    .get_result(conn)
    .await?)
}

fn no_installment(offering: Uuid, number: i32) -> MarketError {
    MarketError::Internal(format!("offering {offering} has no installment {number}"))
}
