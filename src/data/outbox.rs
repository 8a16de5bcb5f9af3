//! Domain events, producer side: an event is wrapped in a
//! `safra.events.v1.Envelope` and written to the service's `outbox` table
//! on the connection of the transaction that makes the state change, so
//! the event commits if and only if the change does. Publishing the outbox
//! (the relay) and subscribing are the transports' part.

use crate::data::statement::Statement;
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::sql_types::{Bytea, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use prost::Message;

use crate::events::v1::{
    DistributionCompleted, Envelope, InvestmentCreated, OfferingCancelled, OfferingFunded,
    OfferingSettled, PaymentConfirmed, UserRegistered,
};

/// A payload of `safra.events.v1`, with its full protobuf name (the
/// envelope's `type` and the RabbitMQ routing key).
pub trait Event: Message {
    /// `safra.events.v1.<Name>`.
    const TYPE: &'static str;
}

macro_rules! events {
    ($($name:ident),* $(,)?) => {
        $(impl Event for $name {
            const TYPE: &'static str = concat!("safra.events.v1.", stringify!($name));
        })*
    };
}

events!(
    UserRegistered,
    InvestmentCreated,
    PaymentConfirmed,
    DistributionCompleted,
    OfferingFunded,
    OfferingCancelled,
    OfferingSettled,
);

/// One event about to be written to the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    envelope: Envelope,
}

impl OutboxEvent {
    /// `payload` emitted by `producer` (a service name), ordered with the
    /// other events of `aggregate_key` (`offering:<id>`, say). The id is
    /// fresh, the time is now and the trace is the current span's.
    #[must_use]
    pub fn new<P: Event>(producer: &str, aggregate_key: impl Into<String>, payload: &P) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            envelope: Envelope {
                id: uuid::Uuid::new_v4().to_string(),
                r#type: P::TYPE.to_owned(),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
                }),
                producer: producer.to_owned(),
                traceparent: crate::observability::telemetry::current_traceparent()
                    .unwrap_or_default(),
                payload: Some(prost_types::Any {
                    type_url: format!("type.googleapis.com/{}", P::TYPE),
                    value: payload.encode_to_vec(),
                }),
                aggregate_key: aggregate_key.into(),
            },
        }
    }

    /// The envelope as it will be published.
    #[must_use]
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Appends the event to the `outbox` table through `conn`: call it
    /// inside the transaction of the change it describes.
    ///
    /// # Errors
    /// A database error (the transaction should then roll back).
    pub async fn write(&self, conn: &mut AsyncPgConnection) -> Result<(), diesel::result::Error> {
        let id = uuid::Uuid::parse_str(&self.envelope.id)
            .map_err(|error| diesel::result::Error::SerializationError(Box::new(error)))?;
        let traceparent = Some(self.envelope.traceparent.as_str()).filter(|t| !t.is_empty());
        Statement::new(
            "INSERT INTO outbox (id, aggregate_key, event_type, payload, traceparent) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(&self.envelope.aggregate_key)
        .bind::<Text, _>(&self.envelope.r#type)
        .bind::<Bytea, _>(self.envelope.encode_to_vec())
        .bind::<Nullable<Text>, _>(traceparent)
        .execute(conn)
        .await
        .map(drop)
    }
}
