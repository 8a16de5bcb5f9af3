//! The distribution's rule: how one payment is split over an offering's
//! holders. Largest remainders: each holder first gets the floor of their
//! exact share, and the centavos left over (fewer than the holders) go one
//! each to the largest remainders, ties broken by holder id ascending. The
//! lines sum exactly to the payment, none is more than one centavo from its
//! exact share, and the result does not depend on the order holders come
//! in. The same rule is the SQL function `allocate_pro_rata` of the
//! distribution migrations; [`check_agreement`] refuses a split on which
//! the two differ.
//!
//! It also says who may see a distribution ([`Sight`]) and what can go
//! wrong serving one ([`DistributionError`]). Pure: nothing here knows
//! gRPC or the database.

use std::collections::BTreeMap;

use uuid::Uuid;

/// Why a split cannot be made or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// A negative payment.
    #[error("the amount to split must not be negative (got {0})")]
    NegativeTotal(i64),
    /// A negative stake.
    #[error("holder {0} has a negative stake")]
    NegativeStake(Uuid),
    /// The same holder twice.
    #[error("holder {0} is listed twice")]
    DuplicateHolder(Uuid),
    /// Nothing to split by.
    #[error("the holders' stakes sum to zero")]
    NoStake,
    /// The SQL function and this code split differently.
    #[error("the database's split differs from the service's for holder {0}")]
    Disagreement(Uuid),
}

/// One holder's line of a split.
pub type Line = (Uuid, i64);

/// Splits `total` centavos over `holders` (id and stake) by largest
/// remainders; the lines come back in the holders' order.
///
/// # Errors
/// [`AllocationError`] for a negative total or stake, a repeated holder or
/// stakes summing to zero.
pub fn allocate_pro_rata(
    total: i64,
    holders: &[(Uuid, i64)],
) -> Result<Vec<Line>, AllocationError> {
    if total < 0 {
        return Err(AllocationError::NegativeTotal(total));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (holder, stake) in holders {
        if *stake < 0 {
            return Err(AllocationError::NegativeStake(*holder));
        }
        if !seen.insert(*holder) {
            return Err(AllocationError::DuplicateHolder(*holder));
        }
    }
    // i128 holds total * stake for any two i64 values, exactly.
    let stake_sum: i128 = holders.iter().map(|(_, stake)| i128::from(*stake)).sum();
    if stake_sum == 0 {
        return Err(AllocationError::NoStake);
    }
    let shares: Vec<(Uuid, i128, i128)> = holders
        .iter()
        .map(|(holder, stake)| {
            let exact = i128::from(total) * i128::from(*stake);
            (*holder, exact / stake_sum, exact % stake_sum)
        })
        .collect();
    let handed_out: i128 = shares.iter().map(|(_, base, _)| base).sum();
    let leftover = usize::try_from(i128::from(total) - handed_out).unwrap_or(0);
    let mut by_remainder: Vec<&(Uuid, i128, i128)> = shares.iter().collect();
    by_remainder.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let extra: std::collections::BTreeSet<Uuid> = by_remainder
        .iter()
        .take(leftover)
        .map(|(holder, _, _)| *holder)
        .collect();
    Ok(shares
        .iter()
        .map(|(holder, base, _)| {
            let amount = base + i128::from(extra.contains(holder));
            // A share never exceeds the total, which is an i64.
            (*holder, i64::try_from(amount).unwrap_or(i64::MAX))
        })
        .collect())
}

/// Checks that the database's split (`sql`) is the service's (`rust`),
/// holder by holder.
///
/// # Errors
/// [`AllocationError::Disagreement`] naming the first holder on which they
/// differ.
pub fn check_agreement(rust: &[Line], sql: &[Line]) -> Result<(), AllocationError> {
    let ours: BTreeMap<Uuid, i64> = rust.iter().copied().collect();
    let theirs: BTreeMap<Uuid, i64> = sql.iter().copied().collect();
    if let Some(holder) = ours
        .keys()
        .chain(theirs.keys())
        .find(|holder| ours.get(holder) != theirs.get(holder))
    {
        return Err(AllocationError::Disagreement(*holder));
    }
    Ok(())
}

/// Who asks to see distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// Sees every distribution, every line.
    Admin,
    /// Anyone else: sees the distributions of their own offerings whole and
    /// their own line of those they hold.
    User(Uuid),
}

/// How much of one distribution a viewer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// Every line.
    Whole,
    /// Only this holder's line.
    OwnLine(Uuid),
    /// Nothing: to them it does not exist.
    Nothing,
}

impl Viewer {
    /// What this viewer sees of a distribution of `producer`'s offering,
    /// where `holds` says whether the viewer has a line in it.
    #[must_use]
    pub fn sight(self, producer: Uuid, holds: bool) -> Sight {
        match self {
            Viewer::Admin => Sight::Whole,
            Viewer::User(user) if user == producer => Sight::Whole,
            Viewer::User(user) if holds => Sight::OwnLine(user),
            Viewer::User(_) => Sight::Nothing,
        }
    }
}

/// Everything that can go wrong in the distribution service; `api.rs`
/// maps each to one gRPC status (an event handler logs it and retries).
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// No such distribution among those the caller may see.
    #[error("no such distribution")]
    NotFound(Uuid),
    /// A page token this service did not make.
    #[error("the page token is not valid")]
    PageToken,
    /// The split cannot be made or trusted.
    #[error(transparent)]
    Allocation(#[from] AllocationError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] safra::data::db::DbError),
    /// A peer (the marketplace, the wallet) failed or said something this
    /// service cannot use: logged, never sent.
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn holder(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn equal_stakes_give_the_leftover_to_the_lowest_ids() {
        let split = allocate_pro_rata(100, &[(holder(3), 1), (holder(1), 1), (holder(2), 1)])
            .expect("a split");
        assert_eq!(split, [(holder(3), 33), (holder(1), 34), (holder(2), 33)]);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(
            allocate_pro_rata(-1, &[(holder(1), 1)]),
            Err(AllocationError::NegativeTotal(-1))
        );
        assert_eq!(
            allocate_pro_rata(10, &[(holder(1), 0)]),
            Err(AllocationError::NoStake)
        );
        assert_eq!(
            allocate_pro_rata(10, &[(holder(1), 1), (holder(1), 2)]),
            Err(AllocationError::DuplicateHolder(holder(1)))
        );
        assert_eq!(
            allocate_pro_rata(10, &[(holder(1), -1)]),
            Err(AllocationError::NegativeStake(holder(1)))
        );
    }

    #[test]
    fn producers_see_whole_distributions_and_holders_their_line() {
        let producer = holder(1);
        let investor = holder(2);
        assert_eq!(Viewer::Admin.sight(producer, false), Sight::Whole);
        assert_eq!(Viewer::User(producer).sight(producer, false), Sight::Whole);
        assert_eq!(
            Viewer::User(investor).sight(producer, true),
            Sight::OwnLine(investor)
        );
        assert_eq!(
            Viewer::User(investor).sight(producer, false),
            Sight::Nothing
        );
    }

    #[test]
    fn disagreements_name_the_holder() {
        let ours = [(holder(1), 5), (holder(2), 5)];
        assert_eq!(check_agreement(&ours, &ours), Ok(()));
        assert_eq!(
            check_agreement(&ours, &[(holder(1), 6), (holder(2), 4)]),
            Err(AllocationError::Disagreement(holder(1)))
        );
        assert_eq!(
            check_agreement(&ours, &[(holder(1), 5)]),
            Err(AllocationError::Disagreement(holder(2)))
        );
    }

    fn holders() -> impl Strategy<Value = Vec<(Uuid, i64)>> {
        prop::collection::btree_map(any::<u128>(), 0..1_000_000_000_000_i64, 1..40).prop_map(
            |stakes| {
                stakes
                    .into_iter()
                    .map(|(id, stake)| (Uuid::from_u128(id), stake))
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            rng_algorithm: prop::test_runner::RngAlgorithm::ChaCha,
            ..ProptestConfig::default()
        })]

        #[test]
        fn splits_are_exact_within_a_centavo_and_order_free(
            total in 0..i64::MAX,
            holders in holders(),
            rotation in 0..40_usize,
        ) {
            prop_assume!(holders.iter().any(|(_, stake)| *stake > 0));
            let split = allocate_pro_rata(total, &holders).expect("a split");
            let sum: i128 = split.iter().map(|(_, amount)| i128::from(*amount)).sum();
            prop_assert_eq!(sum, i128::from(total));
            let stake_sum: i128 = holders.iter().map(|(_, stake)| i128::from(*stake)).sum();
            for ((holder, amount), (_, stake)) in split.iter().zip(&holders) {
                // |amount - total * stake / S| < 1, in integers.
                let gap = (i128::from(*amount) * stake_sum - i128::from(total) * i128::from(*stake)).abs();
                prop_assert!(gap < stake_sum, "holder {} is a centavo or more off", holder);
            }
            let mut turned = holders.clone();
            turned.rotate_left(rotation % holders.len());
            turned.reverse();
            let again = allocate_pro_rata(total, &turned).expect("a split");
            prop_assert_eq!(check_agreement(&split, &again), Ok(()));
        }
    }
}
