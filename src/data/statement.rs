//! Hand-written SQL that PostgreSQL prepares once per connection.
//!
//! diesel never caches `sql_query`: each run parses, plans and closes the
//! statement again (two round trips and a parse). [`Statement`] is the same
//! hand-written SQL with its binds typed, but identified by its text, so
//! the connection's statement cache prepares it on first use and reuses it
//! after. Placeholders are `$1`, `$2`, …; [`Statement::bind`] binds them in
//! that order, each value once.
//!
//! ```ignore
//! let rows: Vec<Row> = Statement::new("SELECT id FROM outbox WHERE seq > $1 LIMIT $2")
//!     .bind::<BigInt, _>(after)
//!     .bind::<BigInt, _>(limit)
//!     .load(conn)
//!     .await?;
//! ```

use diesel::{
    expression::AsExpression,
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    result::{Error as DieselError, QueryResult},
    sql_types::Untyped,
};

/// A hand-written statement and its binds, cached by its text.
#[derive(Debug, Clone)]
#[must_use = "a statement does nothing until it is run"]
pub struct Statement<B = ()> {
    sql: &'static str,
    binds: B,
}

impl Statement {
    /// The statement `sql`, with no value bound yet.
    pub fn new(sql: &'static str) -> Self {
        Self { sql, binds: () }
    }
}

impl<B> Statement<B> {
    /// Binds `value` as SQL type `ST` to the next placeholder.
    pub fn bind<ST, V>(self, value: V) -> Statement<(B, V::Expression)>
    where
        V: AsExpression<ST>,
        ST: diesel::sql_types::SqlType + diesel::sql_types::SingleValue,
    {
        Statement {
            sql: self.sql,
            binds: (self.binds, value.as_expression()),
        }
    }
}

fn misbound(problem: String) -> DieselError {
    DieselError::QueryBuilderError(problem.into())
}

/// The values bound to a statement, in placeholder order.
pub trait Binds {
    /// How many.
    const COUNT: usize;

    /// Writes the value of placeholder `$<index + 1>`.
    ///
    /// # Errors
    /// The value's own.
    fn walk_value<'b>(&'b self, index: usize, out: AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

impl Binds for () {
    const COUNT: usize = 0;

    fn walk_value<'b>(&'b self, index: usize, _: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        Err(misbound(format!("no value bound to ${}", index + 1)))
    }
}

impl<B: Binds, V: QueryFragment<Pg>> Binds for (B, V) {
    const COUNT: usize = B::COUNT + 1;

    fn walk_value<'b>(&'b self, index: usize, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if index == B::COUNT {
            self.1.walk_ast(out)
        } else {
            self.0.walk_value(index, out)
        }
    }
}

impl<B: Binds> QueryFragment<Pg> for Statement<B> {
    /// The text with each placeholder replaced by its value's bind (a
    /// placeholder used twice sends its value twice).
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest = self.sql;
        let mut used = vec![false; B::COUNT];
        while let Some(dollar) = rest.find('$') {
            let digits = rest[dollar + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - dollar - 1);
            if digits == 0 {
                // `$$` or `$tag$`: not a placeholder.
                out.push_sql(&rest[..=dollar]);
                rest = &rest[dollar + 1..];
                continue;
            }
            out.push_sql(&rest[..dollar]);
            let number: usize = rest[dollar + 1..=dollar + digits]
                .parse()
                .map_err(|_| misbound(format!("a bad placeholder in {}", self.sql)))?;
            let index = number
                .checked_sub(1)
                .filter(|index| *index < B::COUNT)
                .ok_or_else(|| misbound(format!("no value bound to ${number}")))?;
            self.binds.walk_value(index, out.reborrow())?;
            used[index] = true;
            rest = &rest[dollar + 1 + digits..];
        }
        out.push_sql(rest);
        match used.iter().position(|used| !used) {
            Some(unused) => Err(misbound(format!(
                "a value bound to ${} which the statement does not use",
                unused + 1
            ))),
            None => Ok(()),
        }
    }
}

impl<B> QueryId for Statement<B> {
    type QueryId = ();
    // Not known from the type: the cache keys it by its text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<B> Query for Statement<B> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sql_types::{BigInt, Text};

    fn sql_of<B: Binds>(statement: &Statement<B>) -> QueryResult<String> {
        use diesel::query_builder::QueryBuilder;
        let mut builder = diesel::pg::PgQueryBuilder::default();
        statement.to_sql(&mut builder, &Pg)?;
        Ok(builder.finish())
    }

    #[test]
    fn the_text_comes_back_with_each_value_at_its_placeholder() {
        let statement = Statement::new("SELECT a FROM t WHERE b = $1 AND c > $2 LIMIT 5")
            .bind::<Text, _>("x")
            .bind::<BigInt, _>(7_i64);
        assert_eq!(
            sql_of(&statement).ok().as_deref(),
            Some("SELECT a FROM t WHERE b = $1 AND c > $2 LIMIT 5")
        );
    }

    #[test]
    fn ten_placeholders_are_not_mistaken_for_one() {
        const SQL: &str = "SELECT $1 + $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 + $10";
        let statement = Statement::new(SQL)
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64)
            .bind::<BigInt, _>(3_i64)
            .bind::<BigInt, _>(4_i64)
            .bind::<BigInt, _>(5_i64)
            .bind::<BigInt, _>(6_i64)
            .bind::<BigInt, _>(7_i64)
            .bind::<BigInt, _>(8_i64)
            .bind::<BigInt, _>(9_i64)
            .bind::<BigInt, _>(10_i64);
        assert_eq!(sql_of(&statement).ok().as_deref(), Some(SQL));
    }

    #[test]
    fn a_placeholder_used_twice_sends_its_value_twice() {
        let statement = Statement::new("SELECT $1 WHERE $2 > 0 AND $1 <> '$$' AND 1 = $2")
            .bind::<Text, _>("x")
            .bind::<BigInt, _>(7_i64);
        assert_eq!(
            sql_of(&statement).ok().as_deref(),
            Some("SELECT $1 WHERE $2 > 0 AND $3 <> '$$' AND 1 = $4")
        );
    }

    #[test]
    fn a_value_without_a_placeholder_or_a_placeholder_without_a_value_is_an_error() {
        let extra = Statement::new("SELECT $1")
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64);
        assert!(sql_of(&extra).is_err());
        let missing = Statement::new("SELECT $1, $2").bind::<BigInt, _>(1_i64);
        assert!(sql_of(&missing).is_err());
    }
}
