//! The RabbitMQ transport (`SAFRA_BROKER=amqp://...`, lapin): relays
//! publish each event to the topic exchange `<ns>.events` with its type as
//! the routing key, persistent, and wait for the broker's confirm of every
//! one before their outbox rows are marked. Each subscriber has one durable
//! quorum queue `<ns>.<subscriber>` bound to the types it wants, with a
//! single active consumer (so events of one aggregate are handled in the
//! order they were published) and a dead-letter queue
//! `<ns>.<subscriber>.dead` for what cannot be read at all or was delivered
//! too often. Deliveries are acknowledged by hand after the handler's
//! transaction committed (or the event was parked), so a consumer that dies
//! loses nothing: the broker delivers again and the handled id makes it a
//! no-op. A lost connection is survived by connecting again and declaring
//! the topology again (declarations are idempotent).
//!
//! An event published before its subscriber's queue exists would be
//! dropped by the exchange, so the relay declares the queues of every
//! subscription it is told of ([`RabbitBus::declaring`]; the mesh's are
//! [`super::subscriptions::MESH`]) before it publishes.

use std::{future::Future, sync::Arc, time::Duration};

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use tokio::sync::Mutex;
use tokio_stream::StreamExt;

use super::{
    BusError,
    postgres::{Logged, Outgoing},
    subscriber::{Outcome, Subscriber},
};
use crate::config::Secret;

/// Deliveries a consumer holds unacknowledged at most: also the largest
/// batch handled in one transaction.
const PREFETCH: u16 = 256;
/// How often the broker may deliver one message before it dead-letters it
/// (a handler that crashes the process, say; failures the handler reports
/// are retried and parked by the subscriber, not counted here).
const DELIVERY_LIMIT: i32 = 20;
/// The pause before connecting again.
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// The broker and the names Safra uses on it.
#[derive(Clone)]
pub struct RabbitBus {
    url: Secret,
    namespace: String,
    publisher: Arc<Mutex<Option<Publisher>>>,
    /// Subscribers whose queues a publisher declares: (name, types).
    subscriptions: Arc<Vec<(String, Vec<String>)>>,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A connection with its confirming channel, kept between publishes.
struct Publisher {
    _connection: Connection,
    channel: Channel,
}

fn broker_error(error: &lapin::Error) -> BusError {
    BusError::Broker(error.to_string())
}

fn short(value: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(value)
        .map_err(|_| BusError::Broker(format!("'{value}' is longer than AMQP allows")))
}

impl RabbitBus {
    /// The broker at `url`; exchanges and queues are named `<namespace>.…`
    /// (`safra` in the mesh; tests use their own).
    #[must_use]
    pub fn new(url: Secret, namespace: impl Into<String>) -> Self {
        Self {
            url,
            namespace: namespace.into(),
            publisher: Arc::new(Mutex::new(None)),
            subscriptions: Arc::new(Vec::new()),
        }
    }

    /// Also declares the queue of `subscriber`, bound to `types`, before
    /// publishing anything.
    #[must_use]
    pub fn declaring(
        mut self,
        subscriber: impl Into<String>,
        types: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Arc::make_mut(&mut self.subscriptions).push((
            subscriber.into(),
            types.into_iter().map(Into::into).collect(),
        ));
        self
    }

    fn exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    fn dead_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// The queue of `subscriber`.
    #[must_use]
    pub fn queue(&self, subscriber: &str) -> String {
        format!("{}.{subscriber}", self.namespace)
    }

    /// The dead-letter queue of `subscriber`.
    #[must_use]
    pub fn dead_queue(&self, subscriber: &str) -> String {
        format!("{}.{subscriber}.dead", self.namespace)
    }

    /// A connection and a channel with the exchanges declared.
    async fn open(&self, name: &str) -> Result<(Connection, Channel), BusError> {
        let properties =
            ConnectionProperties::default().with_connection_name(format!("safra {name}").into());
        let connection = Connection::connect(self.url.expose(), properties)
            .await
            .map_err(|error| broker_error(&error))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| broker_error(&error))?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                short(&self.exchange())?,
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error(&error))?;
        channel
            .exchange_declare(
                short(&self.dead_exchange())?,
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error(&error))?;
        Ok((connection, channel))
    }

    /// Publishes `events` in their order and returns once the broker has
    /// confirmed every one (persisted in the queues bound to its type).
    ///
    /// # Errors
    /// [`BusError::Broker`] when the broker is away or refused one (nacked):
    /// nothing may then be marked published; the connection is opened
    /// again next time.
    pub async fn publish(&self, events: &[Outgoing]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut publisher = self.publisher.lock().await;
        let outcome = self.publish_on(&mut publisher, events).await;
        if outcome.is_err() {
            *publisher = None;
        }
        outcome
    }

    async fn publish_on(
        &self,
        publisher: &mut Option<Publisher>,
        events: &[Outgoing],
    ) -> Result<(), BusError> {
        if !publisher
            .as_ref()
            .is_some_and(|open| open.channel.status().connected())
        {
            let (connection, channel) = self.open("relay").await?;
            for (subscriber, types) in self.subscriptions.iter() {
                self.declare(&channel, subscriber, types.iter().map(String::as_str))
                    .await?;
            }
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|error| broker_error(&error))?;
            *publisher = Some(Publisher {
                _connection: connection,
                channel,
            });
        }
        let Some(open) = publisher.as_ref() else {
            return Err(BusError::Broker("no channel to publish on".into()));
        };
        let exchange = short(&self.exchange())?;
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = FieldTable::default();
            headers.insert(
                "aggregate_key".into(),
                AMQPValue::LongString(event.aggregate_key.as_str().into()),
            );
            let properties = BasicProperties::default()
                .with_message_id(short(&event.event_id.to_string())?)
                .with_content_type("application/x-protobuf".into())
                .with_delivery_mode(2)
                .with_headers(headers);
            let confirm = open
                .channel
                .basic_publish(
                    exchange.clone(),
                    short(&event.event_type)?,
                    BasicPublishOptions::default(),
                    &event.envelope,
                    properties,
                )
                .await
                .map_err(|error| broker_error(&error))?;
            confirms.push(confirm);
        }
        for (event, confirm) in events.iter().zip(confirms) {
            let confirmation = confirm.await.map_err(|error| broker_error(&error))?;
            if !confirmation.is_ack() {
                return Err(BusError::Broker(format!(
                    "the broker refused event {}",
                    event.event_id
                )));
            }
        }
        Ok(())
    }

    /// Messages ready in `subscriber`'s queue (those delivered and not yet
    /// acknowledged are not counted).
    ///
    /// # Errors
    /// [`BusError::Broker`], also when the queue does not exist yet.
    pub async fn queue_depth(&self, subscriber: &str) -> Result<u32, BusError> {
        let (_connection, channel) = self.open("jobs monitor").await?;
        let queue = channel
            .queue_declare(
                short(&self.queue(subscriber))?,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error(&error))?;
        Ok(queue.message_count())
    }

    /// Declares the queue of subscriber `name`, its dead-letter queue and
    /// the bindings of its `types`.
    async fn declare(
        &self,
        channel: &Channel,
        name: &str,
        types: impl Iterator<Item = &str>,
    ) -> Result<(), BusError> {
        let queue = short(&self.queue(name))?;
        let dead = short(&self.dead_queue(name))?;
        let quorum = || {
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            arguments
        };
        let mut arguments = quorum();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_exchange().into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.dead_queue(name).into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT),
        );
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(dead.clone(), durable, quorum())
            .await
            .map_err(|error| broker_error(&error))?;
        channel
            .queue_bind(
                dead.clone(),
                short(&self.dead_exchange())?,
                dead,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error(&error))?;
        channel
            .queue_declare(queue.clone(), durable, arguments)
            .await
            .map_err(|error| broker_error(&error))?;
        for event_type in types {
            channel
                .queue_bind(
                    queue.clone(),
                    short(&self.exchange())?,
                    short(event_type)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|error| broker_error(&error))?;
        }
        Ok(())
    }

    /// Consumes `subscriber`'s queue until `stop` resolves, connecting
    /// again after a lost connection.
    pub async fn run(&self, subscriber: Subscriber, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let consumed = tokio::select! {
                () = &mut stop => return,
                consumed = self.consume(&subscriber) => consumed,
            };
            if let Err(error) = consumed {
                tracing::warn!(subscriber = %subscriber.name(), %error, "consuming from the broker stopped; connecting again");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(RECONNECT_WAIT) => {}
            }
        }
    }

    /// One connection's worth of consuming; returns when it breaks.
    async fn consume(&self, subscriber: &Subscriber) -> Result<(), BusError> {
        let (_connection, channel) = self.open(subscriber.name()).await?;
        self.declare(&channel, subscriber.name(), subscriber.types())
            .await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(|error| broker_error(&error))?;
        let mut deliveries = channel
            .basic_consume(
                short(&self.queue(subscriber.name()))?,
                short(&format!(
                    "{}-{}",
                    subscriber.name(),
                    uuid::Uuid::new_v4().simple()
                ))?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| broker_error(&error))?;
        while let Some(delivery) = deliveries.next().await {
            let mut batch = vec![delivery.map_err(|error| broker_error(&error))?];
            // Whatever else the broker has already sent joins the batch; a
            // zero timeout polls once and never waits.
            while batch.len() < usize::from(PREFETCH) {
                match tokio::time::timeout(Duration::ZERO, deliveries.next()).await {
                    Ok(Some(delivery)) => {
                        batch.push(delivery.map_err(|error| broker_error(&error))?);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            self.handle_deliveries(&channel, subscriber, batch).await?;
        }
        Err(BusError::Broker("the broker closed the consumer".into()))
    }

    /// Handles deliveries in the order they came: in one transaction and
    /// acknowledged at once (the last tag, `multiple`) when the handler
    /// takes batches; otherwise, or when the batch fails, one by one, each
    /// acknowledged once handled or parked.
    async fn handle_deliveries(
        &self,
        channel: &Channel,
        subscriber: &Subscriber,
        deliveries: Vec<Delivery>,
    ) -> Result<(), BusError> {
        let mut ours = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let event_id = delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| uuid::Uuid::parse_str(id.as_str()).ok());
            match event_id {
                Some(event_id) => ours.push((event_id, delivery)),
                // Nothing to deduplicate by: not one of ours.
                None => {
                    delivery
                        .reject(BasicRejectOptions { requeue: false })
                        .await
                        .map_err(|error| broker_error(&error))?;
                }
            }
        }
        if let [.., (_, last)] = ours.as_slice()
            && ours.len() > 1
            && subscriber.handles_batches()
            && ours
                .iter()
                .all(|(_, delivery)| subscriber.follows(delivery.routing_key.as_str()))
        {
            let logged: Vec<Logged> = ours
                .iter()
                .map(|(event_id, delivery)| Logged {
                    position: 0,
                    event_id: *event_id,
                    event_type: delivery.routing_key.to_string(),
                    aggregate_key: String::new(),
                    envelope: delivery.data.clone(),
                })
                .collect();
            if let Ok((handled, _)) = subscriber.handle_batch(&logged).await {
                channel
                    .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
                    .await
                    .map_err(|error| broker_error(&error))?;
                if handled > 0 {
                    subscriber.ring();
                }
                return Ok(());
            }
        }
        for (event_id, delivery) in ours {
            match subscriber
                .handle_one(event_id, delivery.routing_key.as_str(), &delivery.data)
                .await
            {
                Ok(outcome) => {
                    delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(|error| broker_error(&error))?;
                    if outcome == Outcome::Handled {
                        subscriber.ring();
                    }
                }
                Err(BusError::Envelope(_)) => {
                    delivery
                        .reject(BasicRejectOptions { requeue: false })
                        .await
                        .map_err(|error| broker_error(&error))?;
                }
                Err(error) => {
                    // The service's database is away: back to the queue,
                    // and a pause before trying again.
                    drop(
                        delivery
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..BasicNackOptions::default()
                            })
                            .await,
                    );
                    return Err(error);
                }
            }
        }
        Ok(())
    }
}
