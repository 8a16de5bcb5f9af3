//! The distribution database's queries (diesel-async): the split as the
//! SQL function `allocate_pro_rata` computes it (which the service compares
//! with its own before paying anyone), distributions and their lines, the
//! pending ones the credit worker claims with SKIP LOCKED, and the keyset
//! pages ListDistributions reads.

use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    prelude::*,
    result::Error as DieselError,
    sql_types::{Array, BigInt, Nullable, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use safra::data::statement::Statement;
use safra::data::{
    db::{self, DbError},
    paging::Keyset,
};
use uuid::Uuid;

use crate::{
    domain::{DistributionError, Line, Viewer},
    schema::{distribution_lines, distributions},
};

/// Database failures reach the service's error as `DbError`, so that only
/// this file names diesel.
impl From<DieselError> for DistributionError {
    fn from(error: DieselError) -> Self {
        DistributionError::Database(DbError::Query(error))
    }
}

/// A stored distribution.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = distributions)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct DistributionRow {
    /// Its id.
    pub id: Uuid,
    /// The offering whose installment was paid.
    pub offering_id: Uuid,
    /// Which installment.
    pub installment_number: i32,
    /// The wallet's payment.
    pub payment_id: Uuid,
    /// Centavos distributed.
    pub amount_minor: i64,
    /// BRL.
    pub currency_code: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// When it was split.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// The producer who paid.
    pub producer_id: Uuid,
    /// The payment's trace.
    pub traceparent: Option<String>,
    /// When the last line was credited.
    pub complete_time: Option<DateTime<Utc>>,
}

impl DistributionRow {
    /// Where a page ends, for keyset paging.
    #[must_use]
    pub fn keyset(&self) -> Keyset {
        Keyset {
            time: self.create_time,
            id: self.id,
        }
    }
}

/// One holder's line.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = distribution_lines)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct LineRow {
    /// Its distribution.
    pub distribution_id: Uuid,
    /// The holder.
    pub holder_id: Uuid,
    /// The holding it was computed from.
    pub stake_minor: i64,
    /// The holder's share.
    pub amount_minor: i64,
    /// When the wallet credited it (or found nothing to credit).
    pub credited_at: Option<DateTime<Utc>>,
    /// The wallet's transaction, for a line of more than zero.
    pub credit_transaction_id: Option<Uuid>,
}

/// A distribution about to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDistribution {
    /// The offering whose installment was paid.
    pub offering_id: Uuid,
    /// Which installment.
    pub installment_number: i32,
    /// The wallet's payment.
    pub payment_id: Uuid,
    /// Centavos.
    pub amount_minor: i64,
    /// BRL.
    pub currency_code: String,
    /// The producer who paid.
    pub producer_id: Uuid,
    /// The payment's trace.
    pub traceparent: Option<String>,
}

#[derive(QueryableByName)]
struct SqlLine {
    #[diesel(sql_type = SqlUuid)]
    holder_id: Uuid,
    #[diesel(sql_type = BigInt)]
    amount_minor: i64,
}

/// `allocate_pro_rata(total, holders, stakes)` as the database computes it,
/// in the holders' order.
///
/// # Errors
/// The database's, including its refusal of bad input
/// (`invalid_parameter_value`).
pub async fn allocate_pro_rata(
    conn: &mut AsyncPgConnection,
    total: i64,
    holders: &[(Uuid, i64)],
) -> Result<Vec<Line>, diesel::result::Error> {
    let ids: Vec<Uuid> = holders.iter().map(|(holder, _)| *holder).collect();
    let stakes: Vec<i64> = holders.iter().map(|(_, stake)| *stake).collect();
    let lines: Vec<SqlLine> =
        Statement::new("SELECT holder_id, amount_minor FROM allocate_pro_rata($1, $2, $3)")
            .bind::<BigInt, _>(total)
            .bind::<Array<SqlUuid>, _>(ids)
            .bind::<Array<BigInt>, _>(stakes)
            .load(conn)
            .await?;
    Ok(lines
        .into_iter()
        .map(|line| (line.holder_id, line.amount_minor))
        .collect())
}

/// The distribution of `payment`, if there is one.
///
/// # Errors
/// A database error.
pub async fn by_payment(
    conn: &mut AsyncPgConnection,
    payment: Uuid,
) -> Result<Option<DistributionRow>, DistributionError> {
    Ok(distributions::table
        .filter(distributions::payment_id.eq(payment))
        .select(DistributionRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Stores `distribution` PENDING with its `lines` (holder, stake, share);
/// the database checks at commit that the lines sum to the amount.
///
/// # Errors
/// A database error (a second distribution of one payment is refused).
pub async fn insert(
    conn: &mut AsyncPgConnection,
    distribution: &NewDistribution,
    lines: &[(Uuid, i64, i64)],
) -> Result<DistributionRow, DistributionError> {
    let row = diesel::insert_into(distributions::table)
        .values((
            distributions::offering_id.eq(distribution.offering_id),
            distributions::installment_number.eq(distribution.installment_number),
            distributions::payment_id.eq(distribution.payment_id),
            distributions::amount_minor.eq(distribution.amount_minor),
            distributions::currency_code.eq(&distribution.currency_code),
            distributions::producer_id.eq(distribution.producer_id),
            distributions::traceparent.eq(&distribution.traceparent),
        ))
        .returning(DistributionRow::as_returning())
        .get_result(conn)
        .await?;
    // Bind parameters are limited per statement; a few thousand lines per
    // insert stay far below.
    for chunk in lines.chunks(2_000) {
        let values: Vec<_> = chunk
            .iter()
            .map(|(holder, stake, amount)| {
                (
                    distribution_lines::distribution_id.eq(row.id),
                    distribution_lines::holder_id.eq(*holder),
                    distribution_lines::stake_minor.eq(*stake),
                    distribution_lines::amount_minor.eq(*amount),
                )
            })
            .collect();
        diesel::insert_into(distribution_lines::table)
            .values(values)
            .execute(conn)
            .await?;
    }
    Ok(row)
}

/// Up to `limit` PENDING distributions, oldest first (not locked: each is
/// then claimed with [`claim`]).
///
/// # Errors
/// A database error.
pub async fn pending(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<Vec<DistributionRow>, DistributionError> {
    Ok(distributions::table
        .filter(distributions::status.eq("pending"))
        .order(distributions::create_time)
        .limit(limit)
        .select(DistributionRow::as_select())
        .load(conn)
        .await?)
}

/// The PENDING distribution `id`, locked for the caller's transaction;
/// `None` when it is done or another replica holds it.
///
/// # Errors
/// A database error.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<DistributionRow>, DistributionError> {
    Ok(distributions::table
        .find(id)
        .filter(distributions::status.eq("pending"))
        .select(DistributionRow::as_select())
        .for_update()
        .skip_locked()
        .first(conn)
        .await
        .optional()?)
}

/// The lines of `distribution`, by holder id.
///
/// # Errors
/// A database error.
pub async fn lines(
    conn: &mut AsyncPgConnection,
    distribution: Uuid,
) -> Result<Vec<LineRow>, DistributionError> {
    Ok(distribution_lines::table
        .filter(distribution_lines::distribution_id.eq(distribution))
        .order(distribution_lines::holder_id)
        .select(LineRow::as_select())
        .load(conn)
        .await?)
}

/// The lines of every distribution in `ids` (all of them, or only
/// `holder`'s), by distribution and holder id.
///
/// # Errors
/// A database error.
pub async fn lines_of(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    holder: Option<Uuid>,
) -> Result<Vec<LineRow>, DistributionError> {
    let mut query = distribution_lines::table
        .filter(distribution_lines::distribution_id.eq_any(ids))
        .order((
            distribution_lines::distribution_id,
            distribution_lines::holder_id,
        ))
        .select(LineRow::as_select())
        .into_boxed();
    if let Some(holder) = holder {
        query = query.filter(distribution_lines::holder_id.eq(holder));
    }
    Ok(query.load(conn).await?)
}

/// Records the wallet's answers for lines of `distribution`: each holder
/// with the transaction that credited them (none for a zero line).
///
/// # Errors
/// A database error.
pub async fn mark_credited(
    conn: &mut AsyncPgConnection,
    distribution: Uuid,
    credited: &[(Uuid, Option<Uuid>)],
) -> Result<(), DistributionError> {
    Statement::new(
        "UPDATE distribution_lines l SET credited_at = now(), credit_transaction_id = c.tx \
         FROM unnest($2::uuid[], $3::uuid[]) AS c (holder, tx) \
         WHERE l.distribution_id = $1 AND l.holder_id = c.holder AND l.credited_at IS NULL",
    )
    .bind::<SqlUuid, _>(distribution)
    .bind::<Array<SqlUuid>, _>(
        credited
            .iter()
            .map(|(holder, _)| *holder)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<SqlUuid>>, _>(credited.iter().map(|(_, tx)| *tx).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks `distribution` completed now.
///
/// # Errors
/// A database error.
pub async fn complete(
    conn: &mut AsyncPgConnection,
    distribution: Uuid,
) -> Result<DistributionRow, DistributionError> {
    Ok(diesel::update(distributions::table.find(distribution))
        .set((
            distributions::status.eq("completed"),
            distributions::complete_time.eq(diesel::dsl::now),
        ))
        .returning(DistributionRow::as_returning())
        .get_result(conn)
        .await?)
}

/// One distribution, if it exists.
///
/// # Errors
/// A database error.
pub async fn distribution(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<DistributionRow>, DistributionError> {
    Ok(distributions::table
        .find(id)
        .select(DistributionRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Whether `holder` has a line in `distribution`.
///
/// # Errors
/// A database error.
pub async fn holds(
    conn: &mut AsyncPgConnection,
    distribution: Uuid,
    holder: Uuid,
) -> Result<bool, DistributionError> {
    Ok(diesel::select(diesel::dsl::exists(
        distribution_lines::table.find((distribution, holder)),
    ))
    .get_result(conn)
    .await?)
}

/// A page of the distributions `viewer` may see, newest first, after
/// `after`, optionally of one offering.
///
/// # Errors
/// A database error.
pub async fn list(
    conn: &mut AsyncPgConnection,
    viewer: Viewer,
    offering: Option<Uuid>,
    after: Option<Keyset>,
    limit: usize,
) -> Result<Vec<DistributionRow>, DistributionError> {
    let mut query = distributions::table
        .select(DistributionRow::as_select())
        .order((distributions::create_time.desc(), distributions::id.desc()))
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .into_boxed();
    if let Viewer::User(user) = viewer {
        let held = distribution_lines::table
            .filter(distribution_lines::holder_id.eq(user))
            .select(distribution_lines::distribution_id);
        query = query.filter(
            distributions::producer_id
                .eq(user)
                .or(distributions::id.eq_any(held)),
        );
    }
    if let Some(offering) = offering {
        query = query.filter(distributions::offering_id.eq(offering));
    }
    if let Some(after) = after {
        query = query.filter(db::older_than(
            distributions::create_time,
            distributions::id,
            after,
        ));
    }
    Ok(query.load(conn).await?)
}
