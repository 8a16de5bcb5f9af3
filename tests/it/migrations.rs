//! Every service database's migrations run up, down and up again on a real
//! PostgreSQL, and the rules kept next to the data hold.

use diesel::{QueryableByName, sql_types::Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::EmbeddedMigrations;
use safra::data::db;
use safra_test_support::TestDatabase;

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The tables, functions and triggers the schema `public` holds, apart from
/// diesel's own bookkeeping table.
async fn schema_objects(url: &str) -> Vec<String> {
    let mut conn = db::connect_once(url).await.expect("connect");
    let rows: Vec<Name> = diesel::sql_query(
        "SELECT 'table ' || table_name AS name FROM information_schema.tables \
           WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' \
         UNION ALL SELECT 'function ' || p.proname FROM pg_proc p \
           JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' \
         UNION ALL SELECT 'trigger ' || t.tgname FROM pg_trigger t \
           JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE n.nspname = 'public' AND NOT t.tgisinternal \
         UNION ALL SELECT 'type ' || t.typname FROM pg_type t \
           JOIN pg_namespace n ON n.oid = t.typnamespace \
           WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') \
         ORDER BY 1",
    )
    .load(&mut conn)
    .await
    .expect("list schema objects");
    rows.into_iter().map(|row| row.name).collect()
}

async fn up_down_up(service: &str, migrations: &'static EmbeddedMigrations) {
    let database = TestDatabase::empty().await.expect("an empty database");
    let url = database.url();

    let applied = db::migrate_up(&url, migrations).await.expect("first up");
    assert!(!applied.is_empty(), "{service} has migrations");
    let after_first_up = schema_objects(url.expose()).await;
    assert!(
        after_first_up
            .iter()
            .any(|object| object.starts_with("table ")),
        "{service}: up created tables"
    );

    let reverted = db::migrate_down_all(&url, migrations).await.expect("down");
    assert_eq!(
        reverted.len(),
        applied.len(),
        "{service}: every migration reverts"
    );
    assert_eq!(
        schema_objects(url.expose()).await,
        Vec::<String>::new(),
        "{service}: down leaves nothing behind"
    );

    db::migrate_up(&url, migrations).await.expect("second up");
    assert_eq!(
        schema_objects(url.expose()).await,
        after_first_up,
        "{service}: up after down rebuilds the same schema"
    );
    let status = db::migration_status(&url, migrations)
        .await
        .expect("status");
    assert!(
        status.iter().all(|(_, applied)| *applied),
        "{service}: all applied"
    );
}

#[tokio::test]
async fn accounts_migrations_run_up_down_up() {
    up_down_up("accounts", &safra_accounts::MIGRATIONS).await;
}

#[tokio::test]
async fn marketplace_migrations_run_up_down_up() {
    up_down_up("marketplace", &safra_marketplace::MIGRATIONS).await;
}

#[tokio::test]
async fn wallet_migrations_run_up_down_up() {
    up_down_up("wallet", &safra_wallet::MIGRATIONS).await;
}

#[tokio::test]
async fn distribution_migrations_run_up_down_up() {
    up_down_up("distribution", &safra_distribution::MIGRATIONS).await;
}

#[tokio::test]
async fn notifications_migrations_run_up_down_up() {
    up_down_up("notifications", &safra_notifications::MIGRATIONS).await;
}

#[tokio::test]
async fn migrating_twice_applies_nothing_the_second_time() {
    let database = TestDatabase::empty().await.expect("an empty database");
    let url = database.url();
    db::migrate_up(&url, &safra_wallet::MIGRATIONS)
        .await
        .expect("up");
    let again = db::migrate_up(&url, &safra_wallet::MIGRATIONS)
        .await
        .expect("up again");
    assert!(again.is_empty(), "nothing pending: {again:?}");
    let last = db::migrate_down_last(&url, &safra_wallet::MIGRATIONS)
        .await
        .expect("down one");
    assert!(last.is_some(), "one migration reverted");
    let status = db::migration_status(&url, &safra_wallet::MIGRATIONS)
        .await
        .expect("status");
    assert_eq!(status.iter().filter(|(_, applied)| !applied).count(), 1);
}

/// A user's wallet with 100.00 BRL deposited from the outside world, in one
/// balanced ledger transaction.
const FUNDED_WALLET: &str = "
    INSERT INTO wallets (id, owner_id, currency_code)
        VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1', 'BRL');
    BEGIN;
    INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key)
        VALUES ('00000000-0000-0000-0000-0000000000c1', 'deposit', '00000000-0000-0000-0000-0000000000b1', 'k1');
    INSERT INTO ledger_entries (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor) VALUES
        ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000a1', 10000, 'BRL', 10000),
        ('00000000-0000-0000-0000-0000000000c1',
         (SELECT id FROM wallets WHERE system_account = 'external:deposits'), -10000, 'BRL', NULL);
    COMMIT;";

/// The database's message for `statement`, which must fail.
async fn refusal(conn: &mut diesel_async::AsyncPgConnection, statement: &str) -> String {
    let error = conn
        .batch_execute(statement)
        .await
        .expect_err("the statement must be refused");
    conn.batch_execute("ROLLBACK").await.ok();
    error.to_string()
}

#[derive(QueryableByName)]
struct Amount {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    amount: i64,
}

async fn single_amount(conn: &mut diesel_async::AsyncPgConnection, query: &str) -> i64 {
    let rows: Vec<Amount> = diesel::sql_query(query).load(conn).await.expect(query);
    rows.into_iter().next().map_or(i64::MIN, |row| row.amount)
}

#[tokio::test]
async fn the_ledger_keeps_money_right() {
    let database = TestDatabase::migrated("wallet", &safra_wallet::MIGRATIONS)
        .await
        .expect("a wallet database");
    let mut conn = db::connect_once(database.url().expose())
        .await
        .expect("connect");
    conn.batch_execute(FUNDED_WALLET)
        .await
        .expect("a balanced deposit commits");
    let balance = "SELECT balance_minor AS amount FROM wallets WHERE owner_id = '00000000-0000-0000-0000-0000000000b1'";
    assert_eq!(single_amount(&mut conn, balance).await, 10000);

    for statement in [
        "UPDATE ledger_entries SET amount_minor = amount_minor + 1",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_transactions",
    ] {
        let refused = refusal(&mut conn, statement).await;
        assert!(refused.contains("append-only"), "'{statement}': {refused}");
    }
    let refused = refusal(
        &mut conn,
        "UPDATE wallets SET balance_minor = 1 WHERE owner_id IS NOT NULL",
    )
    .await;
    assert!(refused.contains("maintained by the ledger"), "{refused}");

    let unbalanced = "
        BEGIN;
        INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key)
            VALUES ('00000000-0000-0000-0000-0000000000c2', 'deposit', '00000000-0000-0000-0000-0000000000b1', 'k2');
        INSERT INTO ledger_entries (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor)
            VALUES ('00000000-0000-0000-0000-0000000000c2', '00000000-0000-0000-0000-0000000000a1', 500, 'BRL', 10500);
        COMMIT;";
    let refused = refusal(&mut conn, unbalanced).await;
    assert!(refused.contains("double entry"), "{refused}");

    let overdraft = "
        BEGIN;
        INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key, offering_id)
            VALUES ('00000000-0000-0000-0000-0000000000c3', 'investment_debit', '00000000-0000-0000-0000-0000000000b1', 'k3',
                    '00000000-0000-0000-0000-0000000000d1');
        INSERT INTO ledger_entries (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor) VALUES
            ('00000000-0000-0000-0000-0000000000c3', '00000000-0000-0000-0000-0000000000a1', -10001, 'BRL', -1),
            ('00000000-0000-0000-0000-0000000000c3',
             (SELECT id FROM wallets WHERE system_account = 'clearing:investments'), 10001, 'BRL', NULL);
        COMMIT;";
    let refused = refusal(&mut conn, overdraft).await;
    assert!(
        refused.contains("wallets_balance_non_negative"),
        "{refused}"
    );
    assert_eq!(
        single_amount(&mut conn, balance).await,
        10000,
        "nothing was lost"
    );
}

#[tokio::test]
async fn pro_rata_allocation_sums_exactly_with_largest_remainders() {
    let database = TestDatabase::migrated("distribution", &safra_distribution::MIGRATIONS)
        .await
        .expect("a distribution database");
    let mut conn = db::connect_once(database.url().expose())
        .await
        .expect("connect");
    let holders = "ARRAY['00000000-0000-0000-0000-000000000001', \
                         '00000000-0000-0000-0000-000000000002', \
                         '00000000-0000-0000-0000-000000000003']::uuid[]";
    let shares = |total: i64, stakes: &str| {
        format!(
            "SELECT amount_minor AS amount FROM allocate_pro_rata({total}, {holders}, ARRAY[{stakes}]::bigint[])"
        )
    };
    let equal: Vec<Amount> = diesel::sql_query(shares(100, "1,1,1"))
        .load(&mut conn)
        .await
        .expect("allocate 100 over three equal stakes");
    assert_eq!(
        equal.iter().map(|row| row.amount).collect::<Vec<_>>(),
        [34, 33, 33]
    );

    let uneven: Vec<Amount> = diesel::sql_query(shares(1_000_001, "3,7,11"))
        .load(&mut conn)
        .await
        .expect("allocate over uneven stakes");
    assert_eq!(uneven.iter().map(|row| row.amount).sum::<i64>(), 1_000_001);

    let zero_stake = diesel::sql_query(shares(100, "0,0,0"))
        .load::<Amount>(&mut conn)
        .await;
    assert!(zero_stake.is_err(), "a zero total stake is refused");
}

/// An investment of 100.00 into clearing:investments for offering d1, on
/// top of FUNDED_WALLET (the investor keeps nothing).
const INVESTED: &str = "
    BEGIN;
    INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key, offering_id)
        VALUES ('00000000-0000-0000-0000-0000000000c4', 'investment_debit', '00000000-0000-0000-0000-0000000000b1', 'k4',
                '00000000-0000-0000-0000-0000000000d1');
    INSERT INTO ledger_entries (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor) VALUES
        ('00000000-0000-0000-0000-0000000000c4', '00000000-0000-0000-0000-0000000000a1', -10000, 'BRL', 0),
        ('00000000-0000-0000-0000-0000000000c4',
         (SELECT id FROM wallets WHERE system_account = 'clearing:investments'), 10000, 'BRL', NULL);
    COMMIT;";

/// A payout of `amount` from clearing:investments for `offering` to the
/// producer wallet a2 (whose balance is `before`).
fn payout(id: &str, offering: &str, amount: i64, before: i64) -> String {
    format!(
        "BEGIN;
         INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key, offering_id)
             VALUES ('{id}', 'funding_payout', '00000000-0000-0000-0000-0000000000b2', '{id}', '{offering}');
         INSERT INTO ledger_entries (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor) VALUES
             ('{id}', '00000000-0000-0000-0000-0000000000a2', {amount}, 'BRL', {after}),
             ('{id}', (SELECT id FROM wallets WHERE system_account = 'clearing:investments'), -{amount}, 'BRL', NULL);
         COMMIT;",
        after = before + amount
    )
}

#[tokio::test]
async fn clearing_accounts_pay_out_no_more_than_came_in_per_offering() {
    let database = TestDatabase::migrated("wallet", &safra_wallet::MIGRATIONS)
        .await
        .expect("a wallet database");
    let mut conn = db::connect_once(database.url().expose())
        .await
        .expect("connect");
    conn.batch_execute(FUNDED_WALLET).await.expect("funded");
    conn.batch_execute(INVESTED).await.expect("invested");
    conn.batch_execute(
        "INSERT INTO wallets (id, owner_id, currency_code)
             VALUES ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-0000000000b2', 'BRL');",
    )
    .await
    .expect("the producer's wallet");

    let d1 = "00000000-0000-0000-0000-0000000000d1";
    // (transaction, offering, amount, producer's balance before, allowed)
    for (id, offering, amount, before, allowed) in [
        // Another offering's money is not this one's.
        ("e1", "00000000-0000-0000-0000-0000000000d2", 1, 0, false),
        ("e2", d1, 10_001, 0, false),
        // Exactly what came in may go out, and then nothing more.
        ("e3", d1, 10_000, 0, true),
        ("e4", d1, 1, 10_000, false),
    ] {
        let statement = payout(
            &format!("00000000-0000-0000-0000-0000000000{id}"),
            offering,
            amount,
            before,
        );
        if allowed {
            conn.batch_execute(&statement).await.expect(id);
        } else {
            let refused = refusal(&mut conn, &statement).await;
            assert!(
                refused.contains("more paid out than came in"),
                "{id}: {refused}"
            );
        }
    }

    // The balance an entry records must be the one it leaves.
    let wrong_after = "
        BEGIN;
        INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key)
            VALUES ('00000000-0000-0000-0000-0000000000c5', 'deposit', '00000000-0000-0000-0000-0000000000b1', 'k5');
        INSERT INTO ledger_entries (transaction_id, wallet_id, amount_minor, currency_code, balance_after_minor) VALUES
            ('00000000-0000-0000-0000-0000000000c5', '00000000-0000-0000-0000-0000000000a1', 500, 'BRL', 499),
            ('00000000-0000-0000-0000-0000000000c5',
             (SELECT id FROM wallets WHERE system_account = 'external:deposits'), -500, 'BRL', NULL);
        COMMIT;";
    let refused = refusal(&mut conn, wrong_after).await;
    assert!(refused.contains("not the balance it leaves"), "{refused}");
    // A movement other than a deposit names its offering.
    let no_offering = "
        INSERT INTO ledger_transactions (id, kind, owner_id, idempotency_key)
            VALUES ('00000000-0000-0000-0000-0000000000c6', 'investment_debit', '00000000-0000-0000-0000-0000000000b1', 'k6');";
    let refused = refusal(&mut conn, no_offering).await;
    assert!(
        refused.contains("ledger_transactions_offering_present"),
        "{refused}"
    );
    let balance = "SELECT balance_minor AS amount FROM wallets WHERE owner_id = '00000000-0000-0000-0000-0000000000b2'";
    assert_eq!(single_amount(&mut conn, balance).await, 10_000);
}

#[tokio::test]
async fn an_offering_is_never_oversubscribed_in_the_database() {
    let database = TestDatabase::migrated("marketplace", &safra_marketplace::MIGRATIONS)
        .await
        .expect("a marketplace database");
    let mut conn = db::connect_once(database.url().expose())
        .await
        .expect("connect");
    conn.batch_execute(
        "INSERT INTO offerings (id, producer_id, commodity, quantity, unit, face_value_minor, currency_code,
                                annual_rate_bps, maturity_date, funding_deadline)
             VALUES ('00000000-0000-0000-0000-0000000000f1', '00000000-0000-0000-0000-0000000000b1', 'corn', 10, 't',
                     1000, 'BRL', 100, '2030-01-01', now() + interval '1 day');
         UPDATE offerings SET raised_minor = 600, reserved_minor = 400;",
    )
    .await
    .expect("fully subscribed");
    for statement in [
        "UPDATE offerings SET reserved_minor = 401",
        "UPDATE offerings SET raised_minor = 601",
        "UPDATE offerings SET reserved_minor = -1",
        "UPDATE offerings SET status = 'cancelled'",
    ] {
        let refused = refusal(&mut conn, statement).await;
        assert!(
            refused.contains("violates check constraint"),
            "'{statement}': {refused}"
        );
    }
}

#[tokio::test]
async fn bus_migrations_run_up_down_up() {
    up_down_up("bus", &safra::bus::MIGRATIONS).await;
}
