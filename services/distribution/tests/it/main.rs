//! The distribution's split against the database's: the Rust rule and the
//! SQL function `allocate_pro_rata` give the same lines for random
//! payments and holders, on a real PostgreSQL with the migrations applied.

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use safra_distribution::{domain, store};
use safra_test_support::TestDatabase;
use uuid::Uuid;

#[test]
fn the_service_and_the_database_split_alike() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let database = runtime
        .block_on(TestDatabase::migrated(
            "distribution",
            &safra_distribution::MIGRATIONS,
        ))
        .expect("a distribution database");
    // The runner's closure is Fn: the connection is borrowed per case.
    let conn = std::cell::RefCell::new(
        runtime
            .block_on(safra::data::db::connect_once(database.url().expose()))
            .expect("connect"),
    );
    let holders = prop::collection::btree_map(any::<u128>(), 0..1_000_000_000_i64, 1..60).prop_map(
        |stakes| {
            stakes
                .into_iter()
                .map(|(id, stake)| (Uuid::from_u128(id), stake))
                .collect::<Vec<_>>()
        },
    );
    // Small totals make many ties; large ones stress the arithmetic.
    let total = prop_oneof![0..1_000_i64, 0..i64::MAX];
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 200,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[5; 32]),
    );
    runner
        .run(&(total, holders), |(total, holders)| {
            prop_assume!(holders.iter().any(|(_, stake)| *stake > 0));
            let ours = domain::allocate_pro_rata(total, &holders).expect("a split");
            let theirs = runtime
                .block_on(store::allocate_pro_rata(
                    &mut conn.borrow_mut(),
                    total,
                    &holders,
                ))
                .expect("the database splits");
            prop_assert_eq!(domain::check_agreement(&ours, &theirs), Ok(()));
            prop_assert_eq!(ours, theirs, "in the same order, too");
            Ok(())
        })
        .expect("the two agree");
}
