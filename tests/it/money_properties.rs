//! A property of the books across the marketplace and the wallet: any
//! sequence of deposits, offerings, investments, cancellations, background
//! rounds (payouts, refunds) and installment payments leaves every
//! centavo deposited somewhere — in a user's wallet or in an offering's
//! clearing account — no balance below zero, every cached balance equal to
//! its entries, and each offering's clearing money equal to what the
//! marketplace says it holds. The seed is fixed so CI runs the same cases.

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use safra::{
    marketplace::v1::{CancelOfferingRequest, OfferingStatus},
    wallet::v1::{DepositRequest, PayInstallmentRequest},
};
use tonic::Code;
use uuid::Uuid;

use crate::money::{MoneyMesh, User, brl, count, spawn_money_mesh};

#[derive(Debug, Clone)]
enum Step {
    Deposit {
        investor: usize,
        amount: i64,
    },
    Create {
        producer: usize,
        face: i64,
    },
    Invest {
        investor: usize,
        offering: usize,
        amount: i64,
    },
    Cancel {
        offering: usize,
    },
    Pay {
        offering: usize,
        number: i32,
    },
    Round,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3_usize, 1..40_000_i64).prop_map(|(investor, amount)| Step::Deposit { investor, amount }),
        2 => (0..2_usize, 5_000..40_000_i64).prop_map(|(producer, face)| Step::Create { producer, face }),
        4 => (0..3_usize, 0..3_usize, 1..25_000_i64)
            .prop_map(|(investor, offering, amount)| Step::Invest { investor, offering, amount }),
        1 => (0..3_usize).prop_map(|offering| Step::Cancel { offering }),
        2 => (0..3_usize, 1..3_i32).prop_map(|(offering, number)| Step::Pay { offering, number }),
        1 => Just(Step::Round),
    ]
}

/// Refusals the rules make are fine; anything else is a bug.
fn expected(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::NotFound | Code::AlreadyExists | Code::PermissionDenied
    )
}

struct World {
    investors: Vec<User>,
    producers: Vec<User>,
    /// Offering id and producer index.
    offerings: Vec<(String, usize)>,
    deposited: i64,
}

async fn run(mesh: &MoneyMesh, world: &mut World, step: &Step) {
    match *step {
        Step::Deposit { investor, amount } => {
            mesh.wallet
                .clone()
                .deposit(world.investors[investor].call(DepositRequest {
                    amount: Some(brl(amount)),
                    idempotency_key: Uuid::new_v4().to_string(),
                }))
                .await
                .expect("a deposit");
            world.deposited += amount;
        }
        Step::Create { producer, face } => {
            let created = mesh.create(&world.producers[producer], face).await;
            world.offerings.push((created.id, producer));
        }
        Step::Invest {
            investor,
            offering,
            amount,
        } => {
            let Some((id, _)) = world.offerings.get(offering) else {
                return;
            };
            let key = Uuid::new_v4().to_string();
            if let Err(status) = mesh
                .invest(&world.investors[investor], id, amount, &key)
                .await
            {
                assert!(expected(&status), "{step:?}: {status:?}");
            }
        }
        Step::Cancel { offering } => {
            let Some((id, producer)) = world.offerings.get(offering) else {
                return;
            };
            let outcome = mesh
                .market
                .clone()
                .cancel_offering(world.producers[*producer].call(CancelOfferingRequest {
                    offering_id: id.clone(),
                }))
                .await;
            if let Err(status) = outcome {
                assert!(expected(&status), "{step:?}: {status:?}");
            }
        }
        Step::Pay { offering, number } => {
            let Some((id, producer)) = world.offerings.get(offering) else {
                return;
            };
            let outcome = mesh
                .wallet
                .clone()
                .pay_installment(world.producers[*producer].call(PayInstallmentRequest {
                    offering_id: id.clone(),
                    installment_number: number,
                    idempotency_key: Uuid::new_v4().to_string(),
                }))
                .await;
            if let Err(status) = outcome {
                assert!(expected(&status), "{step:?}: {status:?}");
            }
        }
        Step::Round => {
            mesh.marketplace.round().await.expect("a round");
        }
    }
}

async fn check(steps: Vec<Step>) {
    let mesh = spawn_money_mesh().await;
    let mut world = World {
        investors: (0..3).map(|_| mesh.user("investor")).collect(),
        producers: (0..2).map(|_| mesh.user("producer")).collect(),
        offerings: Vec::new(),
        deposited: 0,
    };
    for step in &steps {
        run(&mesh, &mut world, step).await;
    }
    // Let the background work finish what the steps started.
    for _ in 0..50 {
        let round = mesh.marketplace.round().await.expect("a round");
        if round == safra_marketplace::api::Round::default() {
            break;
        }
    }

    let books = mesh.books().await;
    assert_eq!(
        books.deposits, -world.deposited,
        "deposits came from outside"
    );
    assert_eq!(
        books.users + books.investments_clearing + books.installments_clearing,
        world.deposited,
        "every centavo deposited is somewhere: {books:?}"
    );
    assert_eq!(books.negative_users, 0, "no balance below zero");
    assert_eq!(
        books.cached_mismatches, 0,
        "cached balances equal their entries"
    );

    // Each offering's money in clearing is what the marketplace says.
    for (id, _) in &world.offerings {
        let offering = mesh.offering(id).await;
        let clearing = count(
            &mesh.wallet_db.url(),
            &format!(
                "SELECT coalesce(sum(e.amount_minor), 0)::bigint AS total FROM ledger_entries e \
                 JOIN ledger_transactions t ON t.id = e.transaction_id \
                 JOIN wallets w ON w.id = e.wallet_id \
                 WHERE w.system_account = 'clearing:investments' AND t.offering_id = '{id}'"
            ),
        )
        .await;
        let raised = offering.raised.clone().unwrap_or_default().amount_minor;
        let expected = match offering.status() {
            OfferingStatus::Open => raised,
            // Paid out to the producer, or refunded to the investors.
            _ => 0,
        };
        assert_eq!(
            clearing,
            expected,
            "offering {id} ({:?})",
            offering.status()
        );
        assert!(
            raised <= offering.face_value.unwrap_or_default().amount_minor,
            "never oversubscribed"
        );
    }
}

#[test]
fn the_books_balance_across_both_services_for_any_sequence() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let config = Config {
        cases: 10,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]));
    runner
        .run(&prop::collection::vec(step(), 4..24), |steps| {
            runtime.block_on(check(steps));
            Ok(())
        })
        .expect("the property holds");
}
