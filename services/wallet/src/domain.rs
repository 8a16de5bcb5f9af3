//! The wallet's rules: which movements exist and which system account is the
//! other side of each, what a valid amount is, when an installment may be
//! paid, and every way a wallet call can fail (mapped to statuses in
//! `api.rs`). Pure: nothing here knows gRPC or the database.

use uuid::Uuid;

/// The one currency wallets hold.
pub const CURRENCY: &str = "BRL";
/// The largest amount one request may move (10 billion reais), as the
/// contract's field rules say.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// A positive amount of BRL centavos, at most [`MAX_AMOUNT_MINOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(i64);

impl Amount {
    /// Checks `minor` centavos of `currency`.
    ///
    /// # Errors
    /// [`AmountError`] naming what is wrong.
    pub fn new(currency: &str, minor: i64) -> Result<Self, AmountError> {
        if currency != CURRENCY {
            return Err(AmountError::Currency);
        }
        if minor <= 0 {
            return Err(AmountError::NotPositive);
        }
        if minor > MAX_AMOUNT_MINOR {
            return Err(AmountError::TooLarge);
        }
        Ok(Self(minor))
    }

    /// The centavos.
    #[must_use]
    pub fn minor(self) -> i64 {
        self.0
    }
}

/// Why an amount is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Another currency than BRL.
    #[error("must be BRL: wallets hold BRL only")]
    Currency,
    /// Zero or negative.
    #[error("must be positive")]
    NotPositive,
    /// More than one request may move.
    #[error("must be at most 1000000000000 centavos")]
    TooLarge,
}

/// What moved money, with the system account on the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// external:deposits -> user.
    Deposit,
    /// investor -> clearing:investments.
    InvestmentDebit,
    /// clearing:investments -> investor (a cancelled offering).
    InvestmentRefund,
    /// clearing:investments -> producer (a funded offering).
    FundingPayout,
    /// producer -> clearing:installments.
    InstallmentPayment,
    /// clearing:installments -> holder.
    DistributionCredit,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Deposit,
        Kind::InvestmentDebit,
        Kind::InvestmentRefund,
        Kind::FundingPayout,
        Kind::InstallmentPayment,
        Kind::DistributionCredit,
    ];

    /// The stored name (`ledger_transactions.kind`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deposit => "deposit",
            Kind::InvestmentDebit => "investment_debit",
            Kind::InvestmentRefund => "investment_refund",
            Kind::FundingPayout => "funding_payout",
            Kind::InstallmentPayment => "installment_payment",
            Kind::DistributionCredit => "distribution_credit",
        }
    }

    /// The kind stored as `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether the user's wallet receives the money (else it pays).
    #[must_use]
    pub fn credits_user(self) -> bool {
        !matches!(self, Kind::InvestmentDebit | Kind::InstallmentPayment)
    }

    /// The system account on the other side.
    #[must_use]
    pub fn counter_account(self) -> &'static str {
        match self {
            Kind::Deposit => "external:deposits",
            Kind::InvestmentDebit | Kind::InvestmentRefund | Kind::FundingPayout => {
                "clearing:investments"
            }
            Kind::InstallmentPayment | Kind::DistributionCredit => "clearing:installments",
        }
    }

    /// The user wallet's change for `amount`: positive for credits.
    #[must_use]
    pub fn signed(self, amount: Amount) -> i64 {
        if self.credits_user() {
            amount.minor()
        } else {
            -amount.minor()
        }
    }
}

/// One requested movement of a user's money, keyed for idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// Whose wallet.
    pub owner: Uuid,
    /// What for.
    pub kind: Kind,
    /// How much.
    pub amount: Amount,
    /// The offering involved (every kind but deposits).
    pub offering: Option<Uuid>,
    /// What it pays for.
    pub reference: Option<Uuid>,
    /// The caller's key: the same key yields the first outcome.
    pub idempotency_key: String,
}

impl Movement {
    /// Whether an earlier movement stored under the same key was this same
    /// request (a retry) rather than a different one reusing the key.
    #[must_use]
    pub fn repeats(
        &self,
        amount_minor: i64,
        offering: Option<Uuid>,
        reference: Option<Uuid>,
    ) -> bool {
        self.kind.signed(self.amount) == amount_minor
            && self.offering == offering
            && self.reference == reference
    }
}

/// The balance after moving `delta` out of or into `balance`.
///
/// # Errors
/// [`WalletError::InsufficientFunds`] below zero, [`WalletError::Overflow`]
/// past what a balance can hold.
pub fn balance_after(balance: i64, delta: i64) -> Result<i64, WalletError> {
    let after = balance.checked_add(delta).ok_or(WalletError::Overflow)?;
    if after < 0 {
        return Err(WalletError::InsufficientFunds { balance });
    }
    Ok(after)
}

/// Where an offering is, as the marketplace reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferingStatus {
    /// Taking investments.
    Open,
    /// Fully funded: installments are paid now.
    Funded,
    /// Every installment paid.
    Settled,
    /// Closed unfunded.
    Cancelled,
    /// A state this build does not know.
    Unknown,
}

impl OfferingStatus {
    /// The contract's name for it, for error metadata.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OfferingStatus::Open => "OFFERING_STATUS_OPEN",
            OfferingStatus::Funded => "OFFERING_STATUS_FUNDED",
            OfferingStatus::Settled => "OFFERING_STATUS_SETTLED",
            OfferingStatus::Cancelled => "OFFERING_STATUS_CANCELLED",
            OfferingStatus::Unknown => "OFFERING_STATUS_UNSPECIFIED",
        }
    }
}

/// What the wallet needs to know of an offering to take an installment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferingTerms {
    /// Its producer, the only one who pays.
    pub producer: Uuid,
    /// Its state.
    pub status: OfferingStatus,
    /// The schedule: number and amount (in centavos and currency).
    pub installments: Vec<(i32, String, i64)>,
}

impl OfferingTerms {
    /// How many installments the schedule has.
    #[must_use]
    pub fn installment_count(&self) -> i32 {
        i32::try_from(self.installments.len()).unwrap_or(i32::MAX)
    }
}

/// What installment `number` of an offering with `terms` costs `payer`.
///
/// # Errors
/// [`WalletError::NotOfferingProducer`], [`WalletError::OfferingNotFunded`],
/// [`WalletError::InstallmentNotFound`], or an amount the wallet cannot
/// hold.
pub fn installment_due(
    terms: &OfferingTerms,
    payer: Uuid,
    number: i32,
) -> Result<Amount, WalletError> {
    if terms.producer != payer {
        return Err(WalletError::NotOfferingProducer);
    }
    if terms.status != OfferingStatus::Funded {
        return Err(WalletError::OfferingNotFunded(terms.status));
    }
    let (_, currency, minor) = terms
        .installments
        .iter()
        .find(|(n, _, _)| *n == number)
        .ok_or(WalletError::InstallmentNotFound(number))?;
    Amount::new(currency, *minor).map_err(|_| {
        WalletError::Internal(format!(
            "installment {number} is {minor} {currency}, which a wallet cannot pay"
        ))
    })
}

/// Everything that can go wrong in a wallet call; `api.rs` maps each to
/// one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// A request field broke a rule.
    #[error("{field}: {source}")]
    InvalidAmount {
        /// The field path.
        field: &'static str,
        /// The rule.
        source: AmountError,
    },
    /// A movement kind this method does not make.
    #[error("this method does not make {0} movements")]
    KindNotAllowed(String),
    /// The balance would exceed what a wallet holds.
    #[error("amount: the balance would overflow")]
    Overflow,
    /// The balance is short.
    #[error("the wallet's balance is too low")]
    InsufficientFunds {
        /// The balance now, in centavos.
        balance: i64,
    },
    /// The offering's clearing account holds less than it is asked to pay.
    #[error("the offering's clearing account holds less than that")]
    ClearingShort,
    /// The same key came with a different request.
    #[error("the idempotency key was already used for a different request")]
    KeyReused,
    /// Not the offering's producer.
    #[error("only the offering's producer may pay its installments")]
    NotOfferingProducer,
    /// Installments are paid on funded offerings only.
    #[error("installments can only be paid on a funded offering")]
    OfferingNotFunded(OfferingStatus),
    /// No such offering.
    #[error("no such offering")]
    OfferingNotFound(Uuid),
    /// No such installment in the schedule.
    #[error("the offering has no installment {0}")]
    InstallmentNotFound(i32),
    /// Paid already, under another key.
    #[error("the installment was already paid")]
    InstallmentAlreadyPaid {
        /// The earlier payment.
        payment: Uuid,
    },
    /// A page token this service did not make.
    #[error("the page token is not valid")]
    PageToken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] safra::data::db::DbError),
    /// Anything else: logged, never sent.
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_must_be_positive_bounded_reais() {
        assert_eq!(Amount::new("BRL", 1).map(Amount::minor), Ok(1));
        assert_eq!(Amount::new("BRL", 0), Err(AmountError::NotPositive));
        assert_eq!(Amount::new("BRL", -5), Err(AmountError::NotPositive));
        assert_eq!(
            Amount::new("BRL", MAX_AMOUNT_MINOR + 1),
            Err(AmountError::TooLarge)
        );
        assert_eq!(Amount::new("USD", 100), Err(AmountError::Currency));
    }

    #[test]
    fn balances_never_go_negative_nor_overflow() {
        assert_eq!(balance_after(100, -100).ok(), Some(0));
        assert!(matches!(
            balance_after(99, -100),
            Err(WalletError::InsufficientFunds { balance: 99 })
        ));
        assert!(matches!(
            balance_after(i64::MAX, 1),
            Err(WalletError::Overflow)
        ));
    }

    #[test]
    fn every_kind_round_trips_and_pairs_with_its_account() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::Deposit.counter_account(), "external:deposits");
        assert!(!Kind::InvestmentDebit.credits_user());
        assert!(Kind::FundingPayout.credits_user());
    }

    #[test]
    fn only_the_producer_pays_a_scheduled_installment_of_a_funded_offering() {
        let producer = Uuid::new_v4();
        let terms = OfferingTerms {
            producer,
            status: OfferingStatus::Funded,
            installments: vec![(1, "BRL".into(), 500), (2, "BRL".into(), 600)],
        };
        assert_eq!(
            installment_due(&terms, producer, 2).map(Amount::minor).ok(),
            Some(600)
        );
        assert!(matches!(
            installment_due(&terms, Uuid::new_v4(), 1),
            Err(WalletError::NotOfferingProducer)
        ));
        assert!(matches!(
            installment_due(&terms, producer, 3),
            Err(WalletError::InstallmentNotFound(3))
        ));
        let open = OfferingTerms {
            status: OfferingStatus::Open,
            ..terms
        };
        assert!(matches!(
            installment_due(&open, producer, 1),
            Err(WalletError::OfferingNotFunded(OfferingStatus::Open))
        ));
    }
}
