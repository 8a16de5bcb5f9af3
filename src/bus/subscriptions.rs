//! Who follows which events in the mesh: one place the services build
//! their subscribers from and the RabbitMQ relay declares queues from (an
//! event published before its subscriber's queue existed would be lost).

use crate::{
    data::outbox::Event,
    events::v1::{
        DistributionCompleted, InvestmentCreated, OfferingCancelled, OfferingFunded,
        OfferingSettled, PaymentConfirmed, UserRegistered,
    },
};

/// One subscriber and the event types it handles.
#[derive(Debug, Clone, Copy)]
pub struct Subscription {
    /// Its name: its cursor on the PostgreSQL bus, its queue on RabbitMQ.
    pub subscriber: &'static str,
    /// `safra.events.v1.<Name>` of each event it handles.
    pub types: &'static [&'static str],
}

/// Every subscription of the mesh.
pub const MESH: &[Subscription] = &[
    Subscription {
        subscriber: "marketplace",
        types: &[PaymentConfirmed::TYPE, DistributionCompleted::TYPE],
    },
    Subscription {
        subscriber: "distribution",
        types: &[PaymentConfirmed::TYPE],
    },
    Subscription {
        subscriber: "notifications",
        types: &[
            UserRegistered::TYPE,
            InvestmentCreated::TYPE,
            PaymentConfirmed::TYPE,
            DistributionCompleted::TYPE,
            OfferingFunded::TYPE,
            OfferingCancelled::TYPE,
            OfferingSettled::TYPE,
        ],
    },
];

/// The name of every subscriber of the mesh.
#[must_use]
pub fn names() -> Vec<&'static str> {
    MESH.iter()
        .map(|subscription| subscription.subscriber)
        .collect()
}

/// The event types `subscriber` handles (none for a name not in the list).
#[must_use]
pub fn of(subscriber: &str) -> &'static [&'static str] {
    MESH.iter()
        .find(|subscription| subscription.subscriber == subscriber)
        .map_or(&[], |subscription| subscription.types)
}
