//! Distribution over each transport with every part real: the wallet,
//! the marketplace and the distribution service over mutual TLS, their
//! outbox relays and subscribers running as `safra serve` runs them, one
//! database each plus the bus's (or a RabbitMQ namespace of its own). An installment payment reaches every
//! holder exactly (largest remainders), once even when every event is
//! delivered again, each holder is told on a stream they hold open, and
//! the last installment settles the offering. The notifications service's
//! own promises (resume after an id, heartbeats, mark read, a clean end on
//! shutdown) are checked on the same mesh.

use std::{future::Future, time::Duration};

use diesel_async::SimpleAsyncConnection;
use safra::{
    bus::{Bus, postgres::PgBus, rabbit::RabbitBus, subscriber::Retries, subscriptions},
    data::db::{self, Database},
    distribution::v1::{
        DistributionStatus, GetDistributionRequest, ListDistributionsRequest,
        distribution_service_client::DistributionServiceClient,
        distribution_service_server::DistributionServiceServer,
    },
    marketplace::v1::OfferingStatus,
    mesh::Service,
    notifications::v1::{
        ListNotificationsRequest, MarkReadRequest, NotificationKind, StreamNotificationsRequest,
        StreamNotificationsResponse, notifications_service_client::NotificationsServiceClient,
        notifications_service_server::NotificationsServiceServer,
    },
    transport::{client::MeshChannel, server::MeshServer},
    wallet::v1::PayInstallmentRequest,
};
use safra_distribution::api::Distributions;
use safra_notifications::api::{Hub, Notifications, StreamLimits};
use safra_test_support::TestDatabase;
use tonic::Code;

use safra::config::{LogConfig, LogFormat};
use tracing::Instrument;

use crate::bus::{broker_url, clean_up_broker};
use crate::money::{MoneyMesh, User, bind, count, reason, retrier, spawn_money_mesh, verifier};
use crate::tracing::{ReceivedSpan, Receiver};

/// The money mesh with the bus, the distribution service and every
/// service's relay and subscribers running.
struct EventMesh {
    money: MoneyMesh,
    /// The RabbitMQ namespace, when events go through the broker.
    broker_namespace: Option<String>,
    bus_db: TestDatabase,
    distribution_db: TestDatabase,
    /// Kept: dropping a test database drops it on the server.
    _notifications_db: TestDatabase,
    distribution: DistributionServiceClient<MeshChannel>,
    notifications: NotificationsServiceClient<MeshChannel>,
    /// Turned true, the notifications service ends its streams.
    stop_notifications: tokio::sync::watch::Sender<bool>,
}

async fn spawn_event_mesh(on_broker: bool) -> EventMesh {
    spawn_event_mesh_with(on_broker, StreamLimits::default()).await
}

async fn spawn_event_mesh_with(on_broker: bool, limits: StreamLimits) -> EventMesh {
    let money = spawn_money_mesh().await;
    let bus_db = TestDatabase::migrated("bus", &safra::bus::MIGRATIONS)
        .await
        .expect("bus database");
    let distribution_db = TestDatabase::migrated("distribution", &safra_distribution::MIGRATIONS)
        .await
        .expect("distribution database");
    let broker_namespace = on_broker.then(|| format!("test-{}", uuid::Uuid::new_v4().simple()));
    let bus = match &broker_namespace {
        None => Bus::Postgres(PgBus::new(
            Database::connect(&bus_db.config()).await.expect("bus pool"),
        )),
        Some(namespace) => {
            let mut rabbit = RabbitBus::new(broker_url(), namespace.clone());
            for subscription in subscriptions::MESH {
                rabbit =
                    rabbit.declaring(subscription.subscriber, subscription.types.iter().copied());
            }
            Bus::Rabbit(rabbit)
        }
    };
    let pool = |db: &TestDatabase| {
        let config = db.config();
        async move { Database::connect(&config).await.expect("pool") }
    };
    for producer in [&money.marketplace_db, &money.wallet_db, &distribution_db] {
        tokio::spawn(safra::bus::relay::run(
            pool(producer).await,
            bus.clone(),
            std::future::pending(),
        ));
    }
    for subscriber in money.marketplace.subscribers(Retries::default()) {
        tokio::spawn(subscriber.run(bus.clone(), std::future::pending()));
    }
    let tls = money.pki.tls("distribution");
    let channel = |peer: &str, addr: String| {
        safra::transport::client::mesh_channel(&tls, peer, &addr).expect("channel")
    };
    let distributions = Distributions::new(
        pool(&distribution_db).await,
        channel("marketplace", money.market_addr.to_string()),
        channel("wallet", money.wallet_addr.to_string()),
        retrier(),
    );
    for subscriber in distributions.subscribers(Retries::default()) {
        tokio::spawn(subscriber.run(bus.clone(), std::future::pending()));
    }
    tokio::spawn(distributions.clone().run_credits(std::future::pending()));
    let notifications_db =
        TestDatabase::migrated("notifications", &safra_notifications::MIGRATIONS)
            .await
            .expect("notifications database");
    let notifications_pool = pool(&notifications_db).await;
    let (stop_notifications, stopped) = tokio::sync::watch::channel(false);
    let notifications = Notifications::new(
        notifications_pool.clone(),
        Hub::listen(notifications_pool),
        Duration::from_millis(300),
        stopped,
    )
    .with_stream_limits(limits);
    for subscriber in notifications.subscribers(Retries::default()) {
        tokio::spawn(subscriber.run(bus.clone(), std::future::pending()));
    }
    let (listener, notifications_addr) = bind().await;
    let server = MeshServer::new(
        Service::Notifications,
        money.pki.tls("notifications"),
        verifier(&money.keys),
    )
    .expect("server")
    .add_service(NotificationsServiceServer::new(notifications));
    tokio::spawn(server.serve(listener, &[], std::future::pending()));
    let (listener, addr) = bind().await;
    let server = MeshServer::new(Service::Distribution, tls.clone(), verifier(&money.keys))
        .expect("server")
        .add_service(DistributionServiceServer::new(distributions));
    tokio::spawn(server.serve(listener, &[], std::future::pending()));
    let distribution = DistributionServiceClient::new(
        safra::transport::client::mesh_channel(
            &money.pki.tls("gateway"),
            "distribution",
            &addr.to_string(),
        )
        .expect("channel"),
    );
    let notifications = NotificationsServiceClient::new(
        safra::transport::client::mesh_channel(
            &money.pki.tls("gateway"),
            "notifications",
            &notifications_addr.to_string(),
        )
        .expect("channel"),
    );
    EventMesh {
        money,
        broker_namespace,
        bus_db,
        distribution_db,
        _notifications_db: notifications_db,
        distribution,
        notifications,
        stop_notifications,
    }
}

/// The next notification on `stream` (heartbeats skipped), within 30 s.
async fn next_notification(
    stream: &mut tonic::Streaming<StreamNotificationsResponse>,
) -> safra::notifications::v1::Notification {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let message = stream
                .message()
                .await
                .expect("the stream stays healthy")
                .expect("the stream stays open");
            if let Some(notification) = message.notification {
                return notification;
            }
        }
    })
    .await
    .expect("a notification within 30 s")
}

/// Waits for `done`, checking every 50 ms for at most 30 s.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen in 30 s");
}

impl EventMesh {
    async fn pay(&self, producer: &User, offering: &str, number: i32) {
        self.money
            .wallet
            .clone()
            .pay_installment(producer.call(PayInstallmentRequest {
                offering_id: offering.to_owned(),
                installment_number: number,
                idempotency_key: format!("pay-{number}"),
            }))
            .await
            .expect("paid");
    }

    async fn stream(
        &self,
        user: &User,
        after: &str,
    ) -> tonic::Streaming<StreamNotificationsResponse> {
        self.notifications
            .clone()
            .stream_notifications(user.call(StreamNotificationsRequest {
                after_id: after.to_owned(),
            }))
            .await
            .expect("a stream")
            .into_inner()
    }

    async fn balances(&self, users: &[&User]) -> Vec<i64> {
        let mut balances = Vec::new();
        for user in users {
            balances.push(self.money.balance(user).await);
        }
        balances
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_payment_reaches_every_holder_once_and_the_last_settles() {
    a_payment_reaches_every_holder_once_and_the_last_settles(&spawn_event_mesh(false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_rabbitmq_a_payment_reaches_every_holder_once_and_the_last_settles() {
    let mesh = spawn_event_mesh(true).await;
    a_payment_reaches_every_holder_once_and_the_last_settles(&mesh).await;
    mesh.clean_up().await;
}

impl EventMesh {
    async fn clean_up(&self) {
        if let Some(namespace) = &self.broker_namespace {
            let subscribers: Vec<&str> = subscriptions::MESH
                .iter()
                .map(|subscription| subscription.subscriber)
                .collect();
            clean_up_broker(namespace, &subscribers).await;
        }
    }

    /// Delivers every event again: the PostgreSQL cursors rewind; on the
    /// broker, the relays publish every outbox row once more.
    async fn redeliver_everything(&self) {
        match &self.broker_namespace {
            None => {
                let mut bus = db::connect_once(self.bus_db.url().expose())
                    .await
                    .expect("bus");
                bus.batch_execute("UPDATE subscriber_cursors SET position = 0")
                    .await
                    .expect("rewound");
            }
            Some(_) => {
                for database in [
                    &self.money.marketplace_db,
                    &self.money.wallet_db,
                    &self.distribution_db,
                ] {
                    let mut conn = db::connect_once(database.url().expose())
                        .await
                        .expect("connect");
                    conn.batch_execute("UPDATE outbox SET published_at = NULL")
                        .await
                        .expect("unpublished");
                }
            }
        }
    }

    /// Whether every event published so far was handled by every
    /// subscriber that follows it.
    async fn caught_up(&self) -> bool {
        match &self.broker_namespace {
            None => {
                count(
                    &self.bus_db.url(),
                    "SELECT count(*)::bigint AS total FROM subscriber_cursors \
                     WHERE position < (SELECT max(position) FROM event_log)",
                )
                .await
                    == 0
            }
            Some(_) => {
                let mut unpublished = 0;
                for database in [
                    &self.money.marketplace_db,
                    &self.money.wallet_db,
                    &self.distribution_db,
                ] {
                    unpublished += count(
                        &database.url(),
                        "SELECT count(*)::bigint AS total FROM outbox WHERE published_at IS NULL",
                    )
                    .await;
                }
                unpublished == 0
            }
        }
    }
}

async fn a_payment_reaches_every_holder_once_and_the_last_settles(mesh: &EventMesh) {
    let money = &mesh.money;
    let producer = money.user("producer");
    let (ana, bia, caio) = (
        money.user("investor"),
        money.user("investor"),
        money.user("investor"),
    );
    let stranger = money.user("investor");
    let investors = [&ana, &bia, &caio];
    let offer = money.create(&producer, 100_000).await;
    for (investor, amount) in investors.iter().zip([33_333, 33_333, 33_334]) {
        money.deposit(investor, 50_000).await;
        money
            .invest(investor, &offer.id, amount, "stake")
            .await
            .expect("invested");
    }
    money
        .settle_until("the payout", || async {
            money.balance(&producer).await == 100_000
        })
        .await;
    // The two installments are 55,000 each: 10,000 more than was raised.
    money.deposit(&producer, 10_000).await;
    let before = mesh.balances(&investors).await;
    let mut streams = Vec::new();
    for investor in investors {
        streams.push(mesh.stream(investor, "").await);
    }

    mesh.pay(&producer, &offer.id, 1).await;
    // 55,000 × stake / 100,000: 18,333.15, 18,333.15 and 18,333.7; the one
    // centavo left goes to the largest remainder.
    let shares = [18_333, 18_333, 18_334];
    let expected: Vec<i64> = before.iter().zip(shares).map(|(b, s)| b + s).collect();
    eventually("the first distribution", || async {
        mesh.balances(&investors).await == expected
    })
    .await;

    for (stream, share) in streams.iter_mut().zip(shares) {
        // The investments' own news may still be on its way: skip to the share.
        let told = loop {
            let told = next_notification(stream).await;
            if told.kind == NotificationKind::DistributionCompleted as i32 {
                break told;
            }
        };
        assert_eq!(told.offering_id, offer.id);
        let amount = format!("R$ {},{:02}", share / 100, share % 100);
        assert!(
            told.body.starts_with(&amount),
            "{} names {amount}",
            told.body
        );
    }
    let as_producer = mesh
        .distribution
        .clone()
        .list_distributions(producer.call(ListDistributionsRequest::default()))
        .await
        .expect("listed")
        .into_inner();
    let [distribution] = as_producer.distributions.as_slice() else {
        panic!("one distribution, got {:?}", as_producer.distributions);
    };
    eventually("the distribution completes", || async {
        mesh.distribution
            .clone()
            .get_distribution(producer.call(GetDistributionRequest {
                distribution_id: distribution.id.clone(),
            }))
            .await
            .is_ok_and(|found| found.get_ref().status == DistributionStatus::Completed as i32)
    })
    .await;
    assert_eq!(distribution.lines.len(), 3);
    assert_eq!(
        distribution
            .lines
            .iter()
            .map(|line| line.amount.clone().unwrap_or_default().amount_minor)
            .sum::<i64>(),
        55_000
    );
    let own = mesh
        .distribution
        .clone()
        .get_distribution(caio.call(GetDistributionRequest {
            distribution_id: distribution.id.clone(),
        }))
        .await
        .expect("a holder sees it")
        .into_inner();
    let [line] = own.lines.as_slice() else {
        panic!("a holder sees only their line: {:?}", own.lines);
    };
    assert_eq!(line.holder_id, caio.id.to_string());
    assert_eq!(line.amount.clone().unwrap_or_default().amount_minor, 18_334);
    assert!(!line.transaction_id.is_empty(), "credited");
    let hidden = mesh
        .distribution
        .clone()
        .get_distribution(stranger.call(GetDistributionRequest {
            distribution_id: distribution.id.clone(),
        }))
        .await
        .expect_err("a stranger does not see it");
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(reason(&hidden), "DISTRIBUTION_NOT_FOUND");
    let nothing = mesh
        .distribution
        .clone()
        .list_distributions(stranger.call(ListDistributionsRequest::default()))
        .await
        .expect("listed")
        .into_inner();
    assert!(nothing.distributions.is_empty());
    eventually("the marketplace marks installment 1", || async {
        let installment = money.offering(&offer.id).await.installments[0].clone();
        installment.paid_time.is_some() && installment.distributed_time.is_some()
    })
    .await;
    assert_eq!(
        money.offering(&offer.id).await.status,
        OfferingStatus::Funded as i32
    );

    // Every event is delivered again, then installment 2 is paid: its
    // events queue behind the redelivered ones, so once its shares arrive
    // every redelivery was handled, and applied nothing twice.
    mesh.redeliver_everything().await;
    eventually("the redelivered events are published", || mesh.caught_up()).await;
    mesh.pay(&producer, &offer.id, 2).await;
    let settled: Vec<i64> = expected.iter().zip(shares).map(|(b, s)| b + s).collect();
    eventually("the second distribution", || async {
        mesh.balances(&investors).await == settled
    })
    .await;
    eventually("ana is told of both distributions", || async {
        mesh.notifications
            .clone()
            .list_notifications(ana.call(ListNotificationsRequest::default()))
            .await
            .is_ok_and(|page| {
                page.get_ref()
                    .notifications
                    .iter()
                    .filter(|n| n.kind == NotificationKind::DistributionCompleted as i32)
                    .count()
                    == 2
            })
    })
    .await;
    assert_eq!(mesh.balances(&investors).await, settled, "nothing twice");
    assert_eq!(
        count(
            &money.wallet_db.url(),
            "SELECT count(*)::bigint AS total FROM ledger_transactions WHERE kind = 'distribution_credit'",
        )
        .await,
        6
    );
    eventually("the offering settles", || async {
        money.offering(&offer.id).await.status == OfferingStatus::Settled as i32
    })
    .await;
    assert_eq!(
        count(
            &mesh.distribution_db.url(),
            "SELECT count(*)::bigint AS total FROM distributions WHERE status = 'completed'",
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &money.marketplace_db.url(),
            "SELECT count(*)::bigint AS total FROM outbox WHERE event_type = 'safra.events.v1.OfferingSettled'",
        )
        .await,
        1
    );
    let books = money.books().await;
    assert_eq!(
        books.installments_clearing, 0,
        "every centavo paid in went out"
    );
    assert_eq!(books.negative_users, 0);
    assert_eq!(books.cached_mismatches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_holds_a_bounded_number_of_streams_each_ending_cleanly_after_its_lifetime() {
    let mesh = spawn_event_mesh_with(
        false,
        StreamLimits {
            per_user: 2,
            lifetime: Duration::from_secs(3),
        },
    )
    .await;
    let ana = mesh.money.user("investor");
    let bo = mesh.money.user("investor");
    let mut first = mesh.stream(&ana, "").await;
    let _second = mesh.stream(&ana, "").await;
    let refused = mesh
        .notifications
        .clone()
        .stream_notifications(ana.call(StreamNotificationsRequest::default()))
        .await
        .expect_err("a third is one too many");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::ResourceExhausted, "TOO_MANY_STREAMS")
    );
    // Another user is not held back by ana's streams.
    let _bo = mesh.stream(&bo, "").await;
    // At the end of its lifetime a stream ends with OK (no error), for the
    // client to resume; its slot is free again.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match first.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends within its lifetime and a margin");
    assert!(matches!(ended, Ok(None)), "ended cleanly: {ended:?}");
    eventually("the slot is free again", || async {
        mesh.notifications
            .clone()
            .stream_notifications(ana.call(StreamNotificationsRequest::default()))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_streams_resume_after_an_id_beat_and_end_cleanly() {
    let mesh = spawn_event_mesh(false).await;
    let money = &mesh.money;
    let producer = money.user("producer");
    let ana = money.user("investor");
    let stranger = money.user("investor");
    money.deposit(&ana, 100_000).await;
    let offer = money.create(&producer, 60_000).await;
    let mut live = mesh.stream(&ana, "").await;
    money
        .invest(&ana, &offer.id, 20_000, "first")
        .await
        .expect("invested");
    let first = next_notification(&mut live).await;
    assert_eq!(first.kind, NotificationKind::InvestmentCreated as i32);
    assert_eq!(first.user_id, ana.id.to_string());
    // Heartbeats fill the silence (every 300 ms in this mesh).
    let beat = tokio::time::timeout(Duration::from_secs(10), live.message())
        .await
        .expect("a message within 10 s")
        .expect("healthy")
        .expect("open");
    assert!(beat.notification.is_none() && beat.heartbeat_time.is_some());

    // What comes while no stream is open is sent first on a resume.
    drop(live);
    for key in ["second", "third"] {
        money
            .invest(&ana, &offer.id, 20_000, key)
            .await
            .expect("invested");
    }
    eventually("three notifications stored", || async {
        mesh.notifications
            .clone()
            .list_notifications(ana.call(ListNotificationsRequest::default()))
            .await
            .is_ok_and(|page| {
                page.get_ref()
                    .notifications
                    .iter()
                    .filter(|n| n.kind == NotificationKind::InvestmentCreated as i32)
                    .count()
                    == 3
            })
    })
    .await;
    let mut resumed = mesh.stream(&ana, &first.id).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let notification = next_notification(&mut resumed).await;
        assert_ne!(notification.id, first.id, "nothing before the resume point");
        seen.push(notification);
    }
    // Two investments and the offering funded, oldest first.
    assert_eq!(
        seen.iter().map(|n| n.kind).collect::<Vec<_>>(),
        [
            NotificationKind::InvestmentCreated as i32,
            NotificationKind::InvestmentCreated as i32,
            NotificationKind::OfferingFunded as i32,
        ]
    );

    let page = mesh
        .notifications
        .clone()
        .list_notifications(ana.call(ListNotificationsRequest::default()))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(page.unread_count, 4);
    let read = mesh
        .notifications
        .clone()
        .mark_read(ana.call(MarkReadRequest {
            notification_id: first.id.clone(),
        }))
        .await
        .expect("marked")
        .into_inner()
        .notification
        .expect("a notification");
    assert!(read.read);
    let again = mesh
        .notifications
        .clone()
        .mark_read(ana.call(MarkReadRequest {
            notification_id: first.id.clone(),
        }))
        .await
        .expect("marking again succeeds");
    assert!(
        again
            .get_ref()
            .notification
            .as_ref()
            .is_some_and(|n| n.read)
    );
    let unread = mesh
        .notifications
        .clone()
        .list_notifications(ana.call(ListNotificationsRequest {
            unread_only: true,
            ..ListNotificationsRequest::default()
        }))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(unread.unread_count, 3);
    assert!(
        unread
            .notifications
            .iter()
            .all(|n| !n.read && n.id != first.id)
    );
    for refused in [
        mesh.notifications
            .clone()
            .mark_read(stranger.call(MarkReadRequest {
                notification_id: first.id.clone(),
            }))
            .await
            .map(|_| ()),
        mesh.notifications
            .clone()
            .stream_notifications(stranger.call(StreamNotificationsRequest {
                after_id: first.id.clone(),
            }))
            .await
            .map(|_| ()),
    ] {
        let status = refused.expect_err("another user's notification");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason(&status), "NOTIFICATION_NOT_FOUND");
    }

    // On shutdown the stream ends with OK, not an error.
    mesh.stop_notifications.send(true).expect("stopping");
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match resumed.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends within 10 s");
    assert!(matches!(end, Ok(None)), "a clean end, got {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_follows_a_payment_through_the_relay_the_split_each_credit_and_the_notices() {
    let receiver = Receiver::default();
    let otlp = receiver.serve().await;
    let telemetry = safra::observability::telemetry::init_with_writer(
        &LogConfig {
            format: LogFormat::Json,
            filter: "info".into(),
            otlp_endpoint: Some(otlp),
        },
        "events-trace-test",
        std::io::sink,
    )
    .expect("telemetry");
    let mesh = spawn_event_mesh(false).await;
    let money = &mesh.money;
    let producer = money.user("producer");
    let investors = [
        money.user("investor"),
        money.user("investor"),
        money.user("investor"),
    ];
    let offer = money.create(&producer, 90_000).await;
    for (n, investor) in investors.iter().enumerate() {
        money.deposit(investor, 30_000).await;
        money
            .invest(investor, &offer.id, 30_000, &format!("stake-{n}"))
            .await
            .expect("invested");
    }
    money
        .settle_until("the payout", || async {
            money.balance(&producer).await == 90_000
        })
        .await;
    let before = mesh.balances(&investors.iter().collect::<Vec<_>>()).await;

    let root = tracing::info_span!("test.pay_installment");
    mesh.pay(&producer, &offer.id, 1).instrument(root).await;
    // 49,500 over three equal stakes.
    let expected: Vec<i64> = before.iter().map(|balance| balance + 16_500).collect();
    eventually("the distribution", || async {
        mesh.balances(&investors.iter().collect::<Vec<_>>()).await == expected
    })
    .await;
    for investor in &investors {
        eventually("the holder is told", || async {
            mesh.notifications
                .clone()
                .list_notifications(investor.call(ListNotificationsRequest::default()))
                .await
                .is_ok_and(|page| {
                    page.get_ref()
                        .notifications
                        .iter()
                        .any(|n| n.kind == NotificationKind::DistributionCompleted as i32)
                })
        })
        .await;
    }
    // Spans end as their work does; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let telemetry = tokio::task::spawn_blocking(move || {
        telemetry.flush();
        telemetry
    })
    .await
    .expect("flushed");

    let spans = receiver.0.lock().expect("spans").clone();
    let root = spans
        .iter()
        .find(|span| span.name == "test.pay_installment")
        .unwrap_or_else(|| panic!("no root span among {} spans", spans.len()));
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == root.trace_id)
        .collect();
    let named = |name: &str| trace.iter().filter(|span| span.name == name).count();
    // A call shows as a client span and a server span of the same name.
    let served = |name: &str| {
        trace
            .iter()
            .filter(|span| span.name == name && span.kind == 2)
            .count()
    };
    let handled_by = |subscriber: &str| {
        trace
            .iter()
            .filter(|span| {
                span.name == "handle event" && span.attribute("subscriber") == Some(subscriber)
            })
            .count()
    };
    let summary: Vec<String> = trace
        .iter()
        .map(|span| {
            format!(
                "{} {} {:?}",
                span.kind,
                span.name,
                span.attribute("subscriber")
            )
        })
        .collect();
    assert_eq!(
        served("/safra.wallet.v1.WalletService/PayInstallment"),
        1,
        "{summary:#?}"
    );
    // PaymentConfirmed left the wallet, DistributionCompleted the distribution.
    assert!(named("publish event") >= 2, "{summary:#?}");
    assert_eq!(handled_by("distribution"), 1, "{summary:#?}");
    assert_eq!(
        served("/safra.marketplace.v1.MarketplaceService/ListHolders"),
        1,
        "{summary:#?}"
    );
    assert_eq!(named("distribute payment"), 1, "{summary:#?}");
    assert_eq!(
        served("/safra.wallet.v1.WalletService/Credit"),
        3,
        "each credit in the trace: {summary:#?}"
    );
    // The marketplace and notifications handle both events of the payment.
    assert_eq!(handled_by("marketplace"), 2, "{summary:#?}");
    assert_eq!(handled_by("notifications"), 2, "{summary:#?}");
    drop(telemetry);
}
