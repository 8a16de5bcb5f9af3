//! The distribution service's gRPC surface and its work.
//!
//! A PaymentConfirmed ([`PaymentHandler`]) is split at once: the holders
//! come from the marketplace (ListHolders, called as this service over
//! mTLS), the split is computed by the domain and by the database and
//! must agree, and the distribution is stored PENDING with its lines in
//! the transaction that records the event handled. The credit worker
//! ([`Distributions::run_credits`]) then credits every line through
//! Wallet.Credit, keyed by the line (distribution and holder), so a retry
//! after a crash credits nobody twice; when all are credited the
//! distribution is COMPLETED and DistributionCompleted is written in the
//! same transaction. GetDistribution and ListDistributions read the result,
//! showing each caller what the domain's [`Sight`] allows.

use std::{future::Future, sync::Arc, time::Duration};

use safra::{
    bus::{
        subscriber::{
            self, Handler, HandlerError, HandlerFuture, PrepareFuture, Prepared, Retries,
            Subscriber,
        },
        subscriptions,
    },
    contract::status::{self, Violation},
    data::db::Database,
    data::outbox::OutboxEvent,
    data::paging::{self, timestamp},
    distribution::v1::{
        Distribution, DistributionLine, DistributionStatus, GetDistributionRequest,
        ListDistributionsRequest, ListDistributionsResponse,
        distribution_service_server::DistributionService,
    },
    events::v1::{DistributionCompleted, Envelope, PaymentConfirmed, distribution_completed},
    identity::auth::AuthenticatedUser,
    marketplace::v1::{ListHoldersRequest, marketplace_service_client::MarketplaceServiceClient},
    observability::telemetry,
    transport::client::{CallContext, MeshChannel, retry::Retrier},
    r#type::v1::{ErrorReason, Money},
    wallet::v1::{CreditRequest, TransactionKind, wallet_service_client::WalletServiceClient},
};
use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    domain::{self, DistributionError, Sight, Viewer},
    store::{self, DistributionRow, LineRow, NewDistribution},
};

const LIST_HOLDERS: &str = "/safra.marketplace.v1.MarketplaceService/ListHolders";
const CREDIT: &str = "/safra.wallet.v1.WalletService/Credit";
const PRODUCER: &str = "distribution";
const CURRENCY: &str = "BRL";
/// Time given to each call the service makes on its own.
const BACKGROUND_CALL: Duration = Duration::from_secs(10);
/// How often the credit worker looks for pending distributions when
/// nothing woke it.
const CREDIT_POLL: Duration = Duration::from_secs(2);
/// Pending distributions one credit round takes.
const CREDIT_BATCH: i64 = 50;
/// Wallet credits in flight at once for one distribution.
const CREDITS_IN_FLIGHT: usize = 16;

impl From<DistributionError> for Status {
    fn from(error: DistributionError) -> Self {
        let message = error.to_string();
        match error {
            DistributionError::NotFound(id) => status::with_metadata(
                Code::NotFound,
                ErrorReason::DistributionNotFound,
                message,
                &[("distribution_id", id.to_string())],
                Vec::new(),
            ),
            DistributionError::PageToken => status::invalid_argument(&[Violation {
                field: "page_token".into(),
                description: message,
                reason: "INVALID",
            }]),
            DistributionError::Database(error) => error.into(),
            DistributionError::Allocation(_) | DistributionError::Internal(_) => {
                status::internal(&message)
            }
        }
    }
}

/// The distribution service.
#[derive(Debug, Clone)]
pub struct Distributions {
    db: Database,
    marketplace: MarketplaceServiceClient<MeshChannel>,
    wallet: WalletServiceClient<MeshChannel>,
    retrier: Arc<Retrier>,
    /// Rung when a payment was split, so the credit worker starts at once.
    split: Arc<Notify>,
}

impl Distributions {
    /// The service over `db`, reading holders from `marketplace` and
    /// crediting them through `wallet`.
    #[must_use]
    pub fn new(
        db: Database,
        marketplace: MeshChannel,
        wallet: MeshChannel,
        retrier: Arc<Retrier>,
    ) -> Self {
        Self {
            db,
            marketplace: MarketplaceServiceClient::new(marketplace),
            wallet: WalletServiceClient::new(wallet),
            retrier,
            split: Arc::new(Notify::new()),
        }
    }

    /// The subscribers this service runs on the bus.
    #[must_use]
    pub fn subscribers(&self, retries: Retries) -> Vec<Subscriber> {
        vec![
            Subscriber::new(
                PRODUCER,
                subscriptions::of(PRODUCER).iter().copied(),
                Arc::new(PaymentHandler {
                    marketplace: self.marketplace.clone(),
                    retrier: self.retrier.clone(),
                }),
                self.db.clone(),
                retries,
            )
            .waking(self.split.clone()),
        ]
    }

    /// Credits pending distributions until `stop` resolves: at once after a
    /// payment was split, otherwise every few seconds (a crash's leftovers,
    /// a wallet that was away).
    pub async fn run_credits(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.credit_round().await {
                tracing::warn!(%error, "distribution credit round failed");
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.split.notified() => {}
                () = tokio::time::sleep(CREDIT_POLL) => {}
            }
        }
    }

    /// Completes what pending distributions it can; returns how many. A
    /// distribution whose credits fail stays pending for the next round.
    ///
    /// # Errors
    /// The database.
    pub async fn credit_round(&self) -> Result<usize, DistributionError> {
        let pending = {
            let mut conn = self.db.connection().await?;
            store::pending(&mut conn, CREDIT_BATCH).await?
        };
        let mut completed = 0;
        for distribution in pending {
            match self.complete(distribution.id).await {
                Ok(true) => completed += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(distribution = %distribution.id, %error, "distribution left for later");
                }
            }
        }
        Ok(completed)
    }

    /// Credits every owed line of `id` and completes it, holding its row
    /// lock; `false` when another replica holds it or it is done.
    async fn complete(&self, id: Uuid) -> Result<bool, DistributionError> {
        let this = self.clone();
        self.db
            .transaction(move |conn| {
                Box::pin(async move {
                    let Some(distribution) = store::claim(conn, id).await? else {
                        return Ok(false);
                    };
                    let span = tracing::info_span!(
                        "distribute payment",
                        distribution = %distribution.id,
                        offering = %distribution.offering_id,
                    );
                    telemetry::follow_traceparent(
                        &span,
                        distribution.traceparent.as_deref().unwrap_or(""),
                    );
                    async move {
                        let lines = store::lines(conn, distribution.id).await?;
                        let credited = this.credit_lines(&distribution, &lines).await?;
                        store::mark_credited(conn, distribution.id, &credited).await?;
                        let done = store::complete(conn, distribution.id).await?;
                        completed_event(&done, &lines).write(conn).await?;
                        tracing::info!(lines = lines.len(), "distribution completed");
                        Ok(true)
                    }
                    .instrument(span)
                    .await
                })
            })
            .await
    }

    /// Credits the lines not yet credited, a few at a time; every holder
    /// with the wallet's transaction (none for a zero share).
    async fn credit_lines(
        &self,
        distribution: &DistributionRow,
        lines: &[LineRow],
    ) -> Result<Vec<(Uuid, Option<Uuid>)>, DistributionError> {
        let mut owed = lines.iter().filter(|line| line.credited_at.is_none());
        let mut credited = Vec::new();
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            while in_flight.len() < CREDITS_IN_FLIGHT {
                let Some(line) = owed.next() else { break };
                if line.amount_minor == 0 {
                    credited.push((line.holder_id, None));
                    continue;
                }
                let credit = self.credit(distribution, line);
                in_flight.spawn(credit.instrument(tracing::Span::current()));
            }
            let Some(joined) = in_flight.join_next().await else {
                return Ok(credited);
            };
            let outcome = joined.map_err(|error| DistributionError::Internal(error.to_string()))?;
            credited.push(outcome?);
        }
    }

    fn credit(
        &self,
        distribution: &DistributionRow,
        line: &LineRow,
    ) -> impl Future<Output = Result<(Uuid, Option<Uuid>), DistributionError>> + Send + 'static
    {
        let client = self.wallet.clone();
        let retrier = self.retrier.clone();
        let holder = line.holder_id;
        let request = CreditRequest {
            owner_id: holder.to_string(),
            amount: Some(brl(line.amount_minor)),
            kind: TransactionKind::Distribution as i32,
            offering_id: distribution.offering_id.to_string(),
            reference_id: distribution.id.to_string(),
            idempotency_key: format!("distribution:{}/line:{holder}", distribution.id),
        };
        async move {
            let response = retrier
                .call(
                    CREDIT,
                    &CallContext::background(BACKGROUND_CALL),
                    request,
                    |request| {
                        let mut client = client.clone();
                        async move { client.credit(request).await }
                    },
                )
                .await
                .map_err(|status| {
                    DistributionError::Internal(format!("wallet credit: {status}"))
                })?;
            let transaction = response
                .into_inner()
                .transaction
                .and_then(|transaction| Uuid::parse_str(&transaction.id).ok())
                .ok_or_else(|| {
                    DistributionError::Internal("the wallet's credit has no id".into())
                })?;
            Ok((holder, Some(transaction)))
        }
    }
}

/// Splits each PaymentConfirmed over the offering's holders.
#[derive(Debug, Clone)]
pub struct PaymentHandler {
    marketplace: MarketplaceServiceClient<MeshChannel>,
    retrier: Arc<Retrier>,
}

/// The offering's holders and their stakes, asked of the marketplace
/// before the handler's transaction opens.
struct Holders(Vec<(Uuid, i64)>);

impl Handler for PaymentHandler {
    fn prepare<'a>(&'a self, envelope: &'a Envelope) -> PrepareFuture<'a> {
        Box::pin(async move {
            let paid: PaymentConfirmed = subscriber::payload(envelope)?;
            let offering = event_uuid(&paid.offering_id)?;
            Ok(Prepared::new(Holders(self.holders(offering).await?)))
        })
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut safra::data::db::Connection,
        envelope: &'a Envelope,
        prepared: &'a Prepared,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            let paid: PaymentConfirmed = subscriber::payload(envelope)?;
            let payment = event_uuid(&paid.payment_id)?;
            if store::by_payment(conn, payment).await?.is_some() {
                return Ok(());
            }
            let amount = paid.amount.unwrap_or_default();
            if amount.currency_code != CURRENCY || amount.amount_minor <= 0 {
                return Err(HandlerError(format!(
                    "payment {payment}: {} {} cannot be distributed",
                    amount.amount_minor, amount.currency_code
                )));
            }
            let offering = event_uuid(&paid.offering_id)?;
            let Some(Holders(holders)) = prepared.get::<Holders>() else {
                return Err(HandlerError(format!(
                    "payment {payment}: the holders were not gathered before handling"
                )));
            };
            let ours = domain::allocate_pro_rata(amount.amount_minor, holders)
                .map_err(|error| HandlerError(error.to_string()))?;
            let theirs = store::allocate_pro_rata(conn, amount.amount_minor, holders).await?;
            domain::check_agreement(&ours, &theirs)
                .map_err(|error| HandlerError(error.to_string()))?;
            let lines: Vec<(Uuid, i64, i64)> = holders
                .iter()
                .zip(&ours)
                .map(|((holder, stake), (_, share))| (*holder, *stake, *share))
                .collect();
            let traceparent = Some(envelope.traceparent.clone())
                .filter(|traceparent| !traceparent.is_empty())
                .or_else(telemetry::current_traceparent);
            store::insert(
                conn,
                &NewDistribution {
                    offering_id: offering,
                    installment_number: paid.installment_number,
                    payment_id: payment,
                    amount_minor: amount.amount_minor,
                    currency_code: amount.currency_code,
                    producer_id: event_uuid(&paid.producer_id)?,
                    traceparent,
                },
                &lines,
            )
            .await?;
            tracing::info!(%offering, %payment, holders = lines.len(), "payment split");
            Ok(())
        })
    }
}

impl PaymentHandler {
    /// Every holder of `offering` with their holding, checked against the
    /// total the marketplace reports.
    async fn holders(&self, offering: Uuid) -> Result<Vec<(Uuid, i64)>, HandlerError> {
        let mut holders = Vec::new();
        let mut page_token = String::new();
        let total = loop {
            let client = self.marketplace.clone();
            let page = self
                .retrier
                .call(
                    LIST_HOLDERS,
                    &CallContext::background(BACKGROUND_CALL),
                    ListHoldersRequest {
                        offering_id: offering.to_string(),
                        page_size: 500,
                        page_token: page_token.clone(),
                    },
                    |request| {
                        let mut client = client.clone();
                        async move { client.list_holders(request).await }
                    },
                )
                .await
                .map_err(|status| HandlerError(format!("marketplace ListHolders: {status}")))?
                .into_inner();
            for holder in page.holders {
                let stake = holder.amount.unwrap_or_default().amount_minor;
                holders.push((event_uuid(&holder.holder_id)?, stake));
            }
            if page.next_page_token.is_empty() {
                break page.total.unwrap_or_default().amount_minor;
            }
            page_token = page.next_page_token;
        };
        let sum: i64 = holders.iter().map(|(_, stake)| *stake).sum();
        if holders.is_empty() || sum != total {
            return Err(HandlerError(format!(
                "offering {offering}: {} holders hold {sum}, the marketplace says {total}",
                holders.len()
            )));
        }
        Ok(holders)
    }
}

fn completed_event(distribution: &DistributionRow, lines: &[LineRow]) -> OutboxEvent {
    OutboxEvent::new(
        PRODUCER,
        format!("offering:{}", distribution.offering_id),
        &DistributionCompleted {
            distribution_id: distribution.id.to_string(),
            offering_id: distribution.offering_id.to_string(),
            installment_number: distribution.installment_number,
            amount: Some(brl(distribution.amount_minor)),
            lines: lines
                .iter()
                .map(|line| distribution_completed::Line {
                    holder_id: line.holder_id.to_string(),
                    amount: Some(brl(line.amount_minor)),
                })
                .collect(),
            payment_id: distribution.payment_id.to_string(),
            producer_id: distribution.producer_id.to_string(),
            complete_time: distribution.complete_time.map(timestamp),
        },
    )
}

#[tonic::async_trait]
impl DistributionService for Distributions {
    async fn get_distribution(
        &self,
        request: Request<GetDistributionRequest>,
    ) -> Result<Response<Distribution>, Status> {
        let viewer = viewer(&request)?;
        let id = uuid(&request.get_ref().distribution_id)?;
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(DistributionError::from)?;
        let row = store::distribution(&mut conn, id)
            .await?
            .ok_or(DistributionError::NotFound(id))?;
        let holds = match viewer {
            Viewer::User(user) => store::holds(&mut conn, id, user).await?,
            Viewer::Admin => false,
        };
        let lines = match viewer.sight(row.producer_id, holds) {
            Sight::Nothing => return Err(DistributionError::NotFound(id).into()),
            Sight::Whole => store::lines(&mut conn, id).await?,
            Sight::OwnLine(holder) => store::lines_of(&mut conn, &[id], Some(holder)).await?,
        };
        Ok(Response::new(distribution_message(&row, &lines)))
    }

    async fn list_distributions(
        &self,
        request: Request<ListDistributionsRequest>,
    ) -> Result<Response<ListDistributionsResponse>, Status> {
        let viewer = viewer(&request)?;
        let body = request.into_inner();
        let size = paging::page_size(body.page_size);
        let after = paging::decode(&body.page_token).map_err(|_| DistributionError::PageToken)?;
        let offering = if body.offering_id.is_empty() {
            None
        } else {
            Some(uuid(&body.offering_id)?)
        };
        let mut conn = self
            .db
            .connection()
            .await
            .map_err(DistributionError::from)?;
        let mut rows = store::list(&mut conn, viewer, offering, after, size + 1).await?;
        let next_page_token = paging::next_page(&mut rows, size, DistributionRow::keyset);
        // Whole distributions get every line, the others the viewer's own.
        let (whole, own): (Vec<&DistributionRow>, Vec<&DistributionRow>) =
            rows.iter().partition(|row| match viewer {
                Viewer::Admin => true,
                Viewer::User(user) => row.producer_id == user,
            });
        let ids = |rows: &[&DistributionRow]| rows.iter().map(|row| row.id).collect::<Vec<_>>();
        let mut lines = store::lines_of(&mut conn, &ids(&whole), None).await?;
        if let Viewer::User(user) = viewer {
            lines.extend(store::lines_of(&mut conn, &ids(&own), Some(user)).await?);
        }
        Ok(Response::new(ListDistributionsResponse {
            distributions: rows
                .iter()
                .map(|row| {
                    let mine: Vec<LineRow> = lines
                        .iter()
                        .filter(|line| line.distribution_id == row.id)
                        .cloned()
                        .collect();
                    distribution_message(row, &mine)
                })
                .collect(),
            next_page_token,
        }))
    }
}

fn distribution_message(row: &DistributionRow, lines: &[LineRow]) -> Distribution {
    Distribution {
        id: row.id.to_string(),
        offering_id: row.offering_id.to_string(),
        installment_number: row.installment_number,
        amount: Some(brl(row.amount_minor)),
        lines: lines
            .iter()
            .map(|line| DistributionLine {
                holder_id: line.holder_id.to_string(),
                amount: Some(brl(line.amount_minor)),
                holding: Some(brl(line.stake_minor)),
                transaction_id: line
                    .credit_transaction_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            })
            .collect(),
        status: match row.status.as_str() {
            "completed" => DistributionStatus::Completed,
            "failed" => DistributionStatus::Failed,
            _ => DistributionStatus::Pending,
        } as i32,
        payment_id: row.payment_id.to_string(),
        producer_id: row.producer_id.to_string(),
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn viewer<T>(request: &Request<T>) -> Result<Viewer, Status> {
    // The contract stage admits signed-in methods only with a user.
    let user = AuthenticatedUser::of(request)
        .ok_or_else(|| status::internal(&"a signed-in method ran without a user"))?;
    if user.role == "admin" {
        return Ok(Viewer::Admin);
    }
    Uuid::parse_str(&user.user_id)
        .map(Viewer::User)
        .map_err(|_| status::internal(&"a signed-in user without a UUID"))
}

fn uuid(value: &str) -> Result<Uuid, Status> {
    // The contract stage checked the format; a failure here is a bug.
    Uuid::parse_str(value)
        .map_err(|_| status::internal(&"a UUID field passed validation but does not parse"))
}

fn event_uuid(value: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value).map_err(|_| HandlerError(format!("'{value}' is not a UUID")))
}

/// A failed handling is retried, then parked with this text.
impl From<DistributionError> for HandlerError {
    fn from(error: DistributionError) -> Self {
        HandlerError(error.to_string())
    }
}

fn brl(minor: i64) -> Money {
    Money {
        currency_code: CURRENCY.to_owned(),
        amount_minor: minor,
    }
}
