//! The marketplace's rules: what makes an offering valid to issue, the
//! offering's life (OPEN -> FUNDED -> SETTLED, or OPEN -> CANCELLED, and no
//! other move), when an investment fits, who sees which investments, and
//! every way a marketplace call can fail (mapped to statuses in `api.rs`).
//! Pure: nothing here knows gRPC or the database.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// The one currency offerings are issued in.
pub const CURRENCY: &str = "BRL";

/// Where an offering is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Taking investments until its funding deadline.
    Open,
    /// Fully subscribed; the producer pays installments.
    Funded,
    /// Every installment paid.
    Settled,
    /// Closed without being funded.
    Cancelled,
}

/// What happens to an offering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The last investment filled it.
    Fund,
    /// Its last installment was paid.
    Settle,
    /// Its producer cancelled it, or its deadline passed unfunded.
    Cancel,
}

impl Status {
    /// The stored name (`offerings.status`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Funded => "funded",
            Status::Settled => "settled",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status stored as `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            Status::Open,
            Status::Funded,
            Status::Settled,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }

    /// The status after `transition`.
    ///
    /// # Errors
    /// [`MarketError::TransitionNotAllowed`] for any move the life of an
    /// offering does not have.
    pub fn after(self, transition: Transition) -> Result<Status, MarketError> {
        match (self, transition) {
            (Status::Open, Transition::Fund) => Ok(Status::Funded),
            (Status::Funded, Transition::Settle) => Ok(Status::Settled),
            (Status::Open, Transition::Cancel) => Ok(Status::Cancelled),
            (from, _) => Err(MarketError::TransitionNotAllowed(from)),
        }
    }
}

/// Why an offering was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// Its producer (or an admin) cancelled it.
    Producer,
    /// Its funding deadline passed.
    Deadline,
}

impl CancelReason {
    /// The stored name (`offerings.cancel_reason`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Producer => "producer",
            CancelReason::Deadline => "deadline",
        }
    }

    /// The reason stored as `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "producer" => Some(CancelReason::Producer),
            "deadline" => Some(CancelReason::Deadline),
            _ => None,
        }
    }
}

/// One scheduled installment of a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftInstallment {
    /// 1-based.
    pub number: i32,
    /// When it falls due.
    pub due_date: NaiveDate,
    /// Centavos.
    pub amount_minor: i64,
}

/// An offering as a producer asks to issue it, before the rules are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// lower_snake_case.
    pub commodity: String,
    /// Whole units.
    pub quantity: i64,
    /// lower_snake_case.
    pub unit: String,
    /// The face value's currency.
    pub face_value_currency: String,
    /// The face value in centavos.
    pub face_value_minor: i64,
    /// Basis points a year.
    pub annual_rate_bps: i32,
    /// Maturity.
    pub maturity_date: NaiveDate,
    /// When investments close.
    pub funding_deadline: DateTime<Utc>,
    /// The schedule, with each installment's currency.
    pub installments: Vec<(DraftInstallment, String)>,
}

/// A rule a draft breaks: the request field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Proto field path, e.g. `offering.installments[1].due_date`.
    pub field: String,
    /// What is wrong, for a person.
    pub description: String,
}

/// An offering that keeps every issuing rule; only [`Draft::check`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffering {
    /// The draft that passed.
    pub draft: Draft,
    /// The schedule without currencies (all BRL).
    pub installments: Vec<DraftInstallment>,
}

impl Draft {
    /// Applies the rules the field rules cannot express: one currency, the
    /// schedule's numbering, dates in order up to maturity, a deadline in
    /// the future before the first due date, installments covering the
    /// face value. Every problem is reported.
    ///
    /// # Errors
    /// The problems, when there is any.
    pub fn check(self, now: DateTime<Utc>) -> Result<NewOffering, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |field: String, description: &str| {
            problems.push(Problem {
                field,
                description: description.to_owned(),
            });
        };
        if self.face_value_currency != CURRENCY {
            problem(
                "offering.face_value.currency_code".into(),
                "must be BRL: offerings are issued in BRL",
            );
        }
        if self.funding_deadline <= now {
            problem("offering.funding_deadline".into(), "must be in the future");
        }
        if self.funding_deadline.date_naive() >= self.maturity_date {
            problem(
                "offering.funding_deadline".into(),
                "must be before the maturity date",
            );
        }
        let mut previous: Option<NaiveDate> = None;
        let mut total: i128 = 0;
        for (index, (installment, currency)) in self.installments.iter().enumerate() {
            let path = |field: &str| format!("offering.installments[{index}].{field}");
            if usize::try_from(installment.number).ok() != Some(index + 1) {
                problem(
                    path("number"),
                    "installments must be numbered 1, 2, 3, ... in order",
                );
            }
            if currency != CURRENCY {
                problem(
                    path("amount.currency_code"),
                    "must be BRL, the face value's currency",
                );
            }
            if previous.is_some_and(|before| installment.due_date <= before) {
                problem(
                    path("due_date"),
                    "must be after the previous installment's due date",
                );
            }
            if installment.due_date > self.maturity_date {
                problem(path("due_date"), "must not be after the maturity date");
            }
            if index == 0 && installment.due_date <= self.funding_deadline.date_naive() {
                problem(path("due_date"), "must be after the funding deadline");
            }
            previous = Some(installment.due_date);
            total += i128::from(installment.amount_minor);
        }
        if !self.installments.is_empty() && total < i128::from(self.face_value_minor) {
            problem(
                "offering.installments".into(),
                "the installments must add up to at least the face value",
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let installments = self
            .installments
            .iter()
            .map(|(installment, _)| installment.clone())
            .collect();
        Ok(NewOffering {
            draft: self,
            installments,
        })
    }
}

/// What an investment meets when it asks for a share of an offering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The offering's state.
    pub status: Status,
    /// When investments close.
    pub funding_deadline: DateTime<Utc>,
    /// The face value in centavos.
    pub face_value_minor: i64,
    /// Confirmed so far.
    pub raised_minor: i64,
    /// Held by investments under way.
    pub reserved_minor: i64,
}

impl Subscription {
    /// What may still be invested.
    #[must_use]
    pub fn remaining(&self) -> i64 {
        (self.face_value_minor - self.raised_minor - self.reserved_minor).max(0)
    }

    /// Whether `amount_minor` may be invested now, whole: an investment is
    /// never partly filled.
    ///
    /// # Errors
    /// [`MarketError::NotOpen`] or [`MarketError::ExceedsRemaining`].
    pub fn admit(&self, amount_minor: i64, now: DateTime<Utc>) -> Result<(), MarketError> {
        if self.status != Status::Open || now >= self.funding_deadline {
            return Err(MarketError::NotOpen(self.status));
        }
        let remaining = self.remaining();
        if amount_minor > remaining {
            return Err(MarketError::ExceedsRemaining { remaining });
        }
        Ok(())
    }
}

/// Who is asking to see investments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// Sees every investment (and may filter by investor).
    Admin,
    /// Sees the investments in their own offerings.
    Producer(Uuid),
    /// Sees their own investments.
    Investor(Uuid),
}

/// Which investments a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvestmentScope {
    /// Only this investor's.
    pub investor: Option<Uuid>,
    /// Only in offerings of this producer.
    pub producer: Option<Uuid>,
    /// Only in this offering.
    pub offering: Option<Uuid>,
}

impl Viewer {
    /// The scope of a list asked for with `investor` and `offering`
    /// filters: a non-admin's own scope always applies.
    #[must_use]
    pub fn scope(self, investor: Option<Uuid>, offering: Option<Uuid>) -> InvestmentScope {
        match self {
            Viewer::Admin => InvestmentScope {
                investor,
                producer: None,
                offering,
            },
            Viewer::Producer(me) => InvestmentScope {
                investor: None,
                producer: Some(me),
                offering,
            },
            Viewer::Investor(me) => InvestmentScope {
                investor: Some(me),
                producer: None,
                offering,
            },
        }
    }
}

/// Everything that can go wrong in a marketplace call; `api.rs` maps each
/// to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The draft breaks issuing rules.
    #[error("the offering is not valid")]
    Invalid(Vec<Problem>),
    /// No such offering.
    #[error("no such offering")]
    OfferingNotFound(Uuid),
    /// The offering takes no investments now.
    #[error("the offering does not take investments")]
    NotOpen(Status),
    /// More than the offering still needs.
    #[error("the amount is more than the offering still needs")]
    ExceedsRemaining {
        /// What may still be invested.
        remaining: i64,
    },
    /// A move the offering's life does not have.
    #[error("the offering's status does not allow this")]
    TransitionNotAllowed(Status),
    /// Somebody else's offering.
    #[error("only the offering's producer or an admin may do this")]
    NotProducer,
    /// The same key came with a different request.
    #[error("the idempotency key was already used for a different request")]
    KeyReused,
    /// Another currency than the offering's.
    #[error("amount: must be BRL, the offering's currency")]
    Currency,
    /// The wallet refused the debit for want of funds.
    #[error("the wallet's balance is too low")]
    InsufficientFunds {
        /// The balance the wallet reported, if it did.
        balance: Option<String>,
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

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a date")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
    }

    fn draft() -> Draft {
        Draft {
            commodity: "soybean".into(),
            quantity: 1000,
            unit: "bag_60kg".into(),
            face_value_currency: "BRL".into(),
            face_value_minor: 100_000,
            annual_rate_bps: 1250,
            maturity_date: day(2028, 1, 1),
            funding_deadline: now() + chrono::Duration::days(10),
            installments: vec![
                (
                    DraftInstallment {
                        number: 1,
                        due_date: day(2027, 6, 1),
                        amount_minor: 55_000,
                    },
                    "BRL".into(),
                ),
                (
                    DraftInstallment {
                        number: 2,
                        due_date: day(2027, 12, 1),
                        amount_minor: 55_000,
                    },
                    "BRL".into(),
                ),
            ],
        }
    }

    #[test]
    fn a_sound_draft_passes() {
        assert!(draft().check(now()).is_ok());
    }

    #[test]
    fn every_broken_schedule_rule_is_reported_with_its_path() {
        let mut broken = draft();
        broken.installments[1].0.due_date = day(2028, 2, 1);
        broken.installments[1].0.amount_minor = 100;
        broken.installments[0].0.number = 3;
        broken.funding_deadline = now() - chrono::Duration::seconds(1);
        let fields: Vec<String> = broken
            .check(now())
            .expect_err("broken")
            .into_iter()
            .map(|problem| problem.field)
            .collect();
        assert_eq!(
            fields,
            [
                "offering.funding_deadline",
                "offering.installments[0].number",
                "offering.installments[1].due_date",
                "offering.installments",
            ]
        );
    }

    #[test]
    fn due_dates_must_increase() {
        let mut broken = draft();
        broken.installments[1].0.due_date = day(2027, 6, 1);
        let problems = broken.check(now()).expect_err("same day");
        assert_eq!(problems[0].field, "offering.installments[1].due_date");
    }

    #[test]
    fn the_life_of_an_offering_has_four_moves_only() {
        assert_eq!(
            Status::Open.after(Transition::Fund).ok(),
            Some(Status::Funded)
        );
        assert_eq!(
            Status::Funded.after(Transition::Settle).ok(),
            Some(Status::Settled)
        );
        assert_eq!(
            Status::Open.after(Transition::Cancel).ok(),
            Some(Status::Cancelled)
        );
        for (from, transition) in [
            (Status::Funded, Transition::Cancel),
            (Status::Settled, Transition::Cancel),
            (Status::Cancelled, Transition::Cancel),
            (Status::Open, Transition::Settle),
            (Status::Cancelled, Transition::Fund),
            (Status::Funded, Transition::Fund),
        ] {
            assert!(
                matches!(from.after(transition), Err(MarketError::TransitionNotAllowed(f)) if f == from),
                "{from:?} {transition:?}"
            );
        }
    }

    #[test]
    fn investments_fit_whole_or_not_at_all() {
        let subscription = Subscription {
            status: Status::Open,
            funding_deadline: now() + chrono::Duration::days(1),
            face_value_minor: 1000,
            raised_minor: 600,
            reserved_minor: 300,
        };
        assert_eq!(subscription.remaining(), 100);
        assert!(subscription.admit(100, now()).is_ok());
        assert!(matches!(
            subscription.admit(101, now()),
            Err(MarketError::ExceedsRemaining { remaining: 100 })
        ));
        assert!(matches!(
            subscription.admit(1, now() + chrono::Duration::days(2)),
            Err(MarketError::NotOpen(Status::Open))
        ));
    }

    #[test]
    fn non_admins_always_see_only_their_own() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        assert_eq!(
            Viewer::Investor(me).scope(Some(other), None).investor,
            Some(me)
        );
        assert_eq!(
            Viewer::Producer(me).scope(Some(other), None).producer,
            Some(me)
        );
        assert_eq!(Viewer::Admin.scope(Some(other), None).investor, Some(other));
    }
}
