//! What each domain event tells whom: the notices an event makes, one per
//! affected user, with a headline and a body ready to show. Events are
//! self-contained, so nothing here needs another service. Also the
//! service's errors, mapped to gRPC statuses in `api.rs`. Pure: nothing
//! here knows gRPC or the database.

use std::collections::BTreeSet;

use safra::{
    events::v1::{
        DistributionCompleted, InvestmentCreated, OfferingCancelled, OfferingFunded,
        OfferingSettled, PaymentConfirmed, UserRegistered, offering_cancelled::Reason,
    },
    r#type::v1::Money,
};
use uuid::Uuid;

/// What a notice is about (stored in lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A welcome.
    UserRegistered,
    /// An investment was confirmed.
    InvestmentCreated,
    /// An installment was paid.
    PaymentConfirmed,
    /// A payment reached the holders.
    DistributionCompleted,
    /// An offering was fully funded.
    OfferingFunded,
    /// An offering was cancelled.
    OfferingCancelled,
    /// An offering was settled.
    OfferingSettled,
}

impl Kind {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::UserRegistered => "user_registered",
            Kind::InvestmentCreated => "investment_created",
            Kind::PaymentConfirmed => "payment_confirmed",
            Kind::DistributionCompleted => "distribution_completed",
            Kind::OfferingFunded => "offering_funded",
            Kind::OfferingCancelled => "offering_cancelled",
            Kind::OfferingSettled => "offering_settled",
        }
    }

    /// The kind of a stored name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            Kind::UserRegistered,
            Kind::InvestmentCreated,
            Kind::PaymentConfirmed,
            Kind::DistributionCompleted,
            Kind::OfferingFunded,
            Kind::OfferingCancelled,
            Kind::OfferingSettled,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// One notification to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Who it is for.
    pub user: Uuid,
    /// What it is about.
    pub kind: Kind,
    /// A short headline.
    pub title: String,
    /// Plain text.
    pub body: String,
    /// The offering it concerns.
    pub offering: Option<Uuid>,
}

/// Why an event makes no sense to this service (parked, not retried
/// forever).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadEvent(pub String);

/// Everything that can go wrong serving notifications.
#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    /// Not among the caller's notifications.
    #[error("no such notification")]
    NotFound(Uuid),
    /// A page token this service did not make.
    #[error("the page token is not valid")]
    PageToken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] safra::data::db::DbError),
}

fn id(value: &str) -> Result<Uuid, BadEvent> {
    Uuid::parse_str(value).map_err(|_| BadEvent(format!("'{value}' is not a UUID")))
}

fn ids(values: &[String]) -> Result<BTreeSet<Uuid>, BadEvent> {
    values.iter().map(|value| id(value)).collect()
}

/// `R$ 1.234,56` for a BRL amount; other currencies by their code.
#[must_use]
pub fn money(amount: Option<&Money>) -> String {
    let Some(amount) = amount else {
        return "an amount".to_owned();
    };
    let minor = amount.amount_minor.unsigned_abs();
    let units = (minor / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in units.chars().enumerate() {
        if i > 0 && (units.len() - i) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(digit);
    }
    let sign = if amount.amount_minor < 0 { "-" } else { "" };
    let symbol = if amount.currency_code == "BRL" {
        "R$".to_owned()
    } else {
        amount.currency_code.clone()
    };
    format!("{sign}{symbol} {grouped},{:02}", minor % 100)
}

fn short(offering: &str) -> &str {
    offering.get(..8).unwrap_or(offering)
}

/// The welcome of a new user.
///
/// # Errors
/// [`BadEvent`] for an id that is not a UUID.
pub fn registered(event: &UserRegistered) -> Result<Vec<Notice>, BadEvent> {
    Ok(vec![Notice {
        user: id(&event.user_id)?,
        kind: Kind::UserRegistered,
        title: "Welcome to Safra".to_owned(),
        body: format!(
            "Hello {}, your account ({}) is ready.",
            event.display_name, event.email
        ),
        offering: None,
    }])
}

/// The investor's confirmation and the producer's news.
///
/// # Errors
/// [`BadEvent`] for an id that is not a UUID.
pub fn invested(event: &InvestmentCreated) -> Result<Vec<Notice>, BadEvent> {
    let offering = id(&event.offering_id)?;
    let amount = money(event.amount.as_ref());
    let name = short(&event.offering_id);
    Ok(vec![
        Notice {
            user: id(&event.investor_id)?,
            kind: Kind::InvestmentCreated,
            title: "Investment confirmed".to_owned(),
            body: format!("Your investment of {amount} in offering {name} is confirmed."),
            offering: Some(offering),
        },
        Notice {
            user: id(&event.producer_id)?,
            kind: Kind::InvestmentCreated,
            title: "New investment".to_owned(),
            body: format!(
                "An investor put {amount} into your offering {name}; raised so far: {}.",
                money(event.raised.as_ref())
            ),
            offering: Some(offering),
        },
    ])
}

/// The producer's receipt for an installment.
///
/// # Errors
/// [`BadEvent`] for an id that is not a UUID.
pub fn paid(event: &PaymentConfirmed) -> Result<Vec<Notice>, BadEvent> {
    Ok(vec![Notice {
        user: id(&event.producer_id)?,
        kind: Kind::PaymentConfirmed,
        title: format!("Installment {} paid", event.installment_number),
        body: format!(
            "Your payment of {} for installment {} of {} of offering {} is confirmed; it is being distributed to the holders.",
            money(event.amount.as_ref()),
            event.installment_number,
            event.installment_count,
            short(&event.offering_id)
        ),
        offering: Some(id(&event.offering_id)?),
    }])
}

/// Every holder's share, and the producer's summary.
///
/// # Errors
/// [`BadEvent`] for an id that is not a UUID.
pub fn distributed(event: &DistributionCompleted) -> Result<Vec<Notice>, BadEvent> {
    let offering = id(&event.offering_id)?;
    let name = short(&event.offering_id);
    let mut notices = Vec::with_capacity(event.lines.len() + 1);
    for line in &event.lines {
        notices.push(Notice {
            user: id(&line.holder_id)?,
            kind: Kind::DistributionCompleted,
            title: "You received a distribution".to_owned(),
            body: format!(
                "{} from installment {} of offering {name} was credited to your wallet.",
                money(line.amount.as_ref()),
                event.installment_number
            ),
            offering: Some(offering),
        });
    }
    notices.push(Notice {
        user: id(&event.producer_id)?,
        kind: Kind::DistributionCompleted,
        title: format!("Installment {} distributed", event.installment_number),
        body: format!(
            "{} reached {} holders of offering {name}.",
            money(event.amount.as_ref()),
            event.lines.len()
        ),
        offering: Some(offering),
    });
    Ok(dedupe(notices))
}

/// The producer and every investor of a funded offering.
///
/// # Errors
/// [`BadEvent`] for an id that is not a UUID.
pub fn funded(event: &OfferingFunded) -> Result<Vec<Notice>, BadEvent> {
    let raised = money(event.raised.as_ref());
    let name = short(&event.offering_id);
    to_everyone(
        &event.offering_id,
        &event.producer_id,
        &event.investor_ids,
        Kind::OfferingFunded,
        "Offering funded",
        &format!("Offering {name} is fully funded with {raised}."),
    )
}

/// The producer and every investor of a cancelled offering.
///
/// # Errors
/// [`BadEvent`] for an id that is not a UUID.
pub fn cancelled(event: &OfferingCancelled) -> Result<Vec<Notice>, BadEvent> {
    let why = match Reason::try_from(event.reason) {
        Ok(Reason::FundingDeadlinePassed) => "its funding deadline passed",
        Ok(Reason::CancelledByProducer) => "its producer cancelled it",
        _ => "it was cancelled",
    };
    let name = short(&event.offering_id);
    to_everyone(
        &event.offering_id,
        &event.producer_id,
        &event.investor_ids,
        Kind::OfferingCancelled,
        "Offering cancelled",
        &format!("Offering {name} was closed because {why}; investments are refunded."),
    )
}

/// The producer and every holder of a settled offering.
///
/// # Errors
/// [`BadEvent`] for an id that is not a UUID.
pub fn settled(event: &OfferingSettled) -> Result<Vec<Notice>, BadEvent> {
    let name = short(&event.offering_id);
    to_everyone(
        &event.offering_id,
        &event.producer_id,
        &event.investor_ids,
        Kind::OfferingSettled,
        "Offering settled",
        &format!("Every installment of offering {name} was paid and distributed."),
    )
}

fn to_everyone(
    offering: &str,
    producer: &str,
    investors: &[String],
    kind: Kind,
    title: &str,
    body: &str,
) -> Result<Vec<Notice>, BadEvent> {
    let offering = id(offering)?;
    let mut users = ids(investors)?;
    users.insert(id(producer)?);
    Ok(users
        .into_iter()
        .map(|user| Notice {
            user,
            kind,
            title: title.to_owned(),
            body: body.to_owned(),
            offering: Some(offering),
        })
        .collect())
}

/// One notice per user: a producer who also holds gets their line's.
fn dedupe(notices: Vec<Notice>) -> Vec<Notice> {
    let mut seen = BTreeSet::new();
    notices
        .into_iter()
        .filter(|notice| seen.insert(notice.user))
        .collect()
}

#[cfg(test)]
mod tests {
    use safra::events::v1::distribution_completed::Line;

    use super::*;

    fn brl(minor: i64) -> Option<Money> {
        Some(Money {
            currency_code: "BRL".into(),
            amount_minor: minor,
        })
    }

    #[test]
    fn amounts_read_as_reais() {
        assert_eq!(money(brl(123_456_789).as_ref()), "R$ 1.234.567,89");
        assert_eq!(money(brl(5).as_ref()), "R$ 0,05");
        assert_eq!(money(brl(100_000).as_ref()), "R$ 1.000,00");
    }

    #[test]
    fn a_distribution_tells_each_holder_their_share_and_the_producer_once() {
        let (producer, ana, bia) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let event = DistributionCompleted {
            offering_id: Uuid::new_v4().to_string(),
            producer_id: producer.to_string(),
            installment_number: 1,
            amount: brl(300),
            lines: vec![
                Line {
                    holder_id: ana.to_string(),
                    amount: brl(100),
                },
                Line {
                    holder_id: bia.to_string(),
                    amount: brl(200),
                },
            ],
            ..DistributionCompleted::default()
        };
        let notices = distributed(&event).expect("notices");
        assert_eq!(
            notices.iter().map(|notice| notice.user).collect::<Vec<_>>(),
            [ana, bia, producer]
        );
        assert!(notices[1].body.starts_with("R$ 2,00"));
    }

    #[test]
    fn an_event_with_a_broken_id_is_refused() {
        let event = OfferingFunded {
            offering_id: "nope".into(),
            ..OfferingFunded::default()
        };
        assert!(funded(&event).is_err());
    }
}
