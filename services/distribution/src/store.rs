//! The distribution database's queries (diesel-async): for now the split
//! as the SQL function `allocate_pro_rata` computes it, which the service
//! compares with its own before paying anyone.

use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::domain::Line;

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
        diesel::sql_query("SELECT holder_id, amount_minor FROM allocate_pro_rata($1, $2, $3)")
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
