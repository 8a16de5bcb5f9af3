//! The marketplace service's gRPC surface and its background work.
//!
//! Handlers convert requests into domain values, apply the rules through
//! the store and convert back; who may call and which fields are valid were
//! settled by the contract stage. An investment is recorded PENDING (its
//! amount reserved) before the wallet is debited under a key made from the
//! investment's id, then confirmed or failed; whatever a crash interrupts,
//! the background task finishes: it re-asks the wallet for stale pending
//! debits (the key makes that safe), pays producers of funded offerings,
//! refunds investors of cancelled ones and closes offerings whose deadline
//! passed. Every wallet call is idempotent, so two replicas may do it at
//! once.
//!
//! The service also follows two events ([`MarketplaceEvents`]): a
//! PaymentConfirmed marks an installment paid, a DistributionCompleted
//! marks it distributed, and the last one settles the offering
//! (OfferingSettled).

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{Datelike, NaiveDate, Utc};
use safra::{
    bus::{
        subscriber::{self, Handler, HandlerError, HandlerFuture, Prepared, Retries, Subscriber},
        subscriptions,
    },
    contract::status::{self, Violation},
    data::db::Database,
    data::outbox::{Event, OutboxEvent},
    data::paging::{self, from_timestamp, timestamp},
    events::v1::{
        DistributionCompleted, Envelope, InvestmentCreated, OfferingCancelled, OfferingFunded,
        OfferingSettled, PaymentConfirmed, offering_cancelled::Reason as CancelledReason,
    },
    google::r#type::Date,
    identity::auth::AuthenticatedUser,
    marketplace::v1::{
        CancelOfferingRequest, CancelOfferingResponse, CancelReason as ProtoCancelReason,
        CreateOfferingRequest, CreateOfferingResponse, GetOfferingRequest, Holder, Installment,
        InvestRequest, InvestResponse, Investment, InvestmentStatus, ListHoldersRequest,
        ListHoldersResponse, ListInvestmentsRequest, ListInvestmentsResponse, ListOfferingsRequest,
        ListOfferingsResponse, Offering, OfferingStatus,
        marketplace_service_server::MarketplaceService,
    },
    transport::client::{CallContext, MeshChannel, retry::Retrier},
    r#type::v1::{ErrorReason, Money, PageToken},
    wallet::v1::{
        CreditRequest, DebitRequest, TransactionKind, wallet_service_client::WalletServiceClient,
    },
};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        CURRENCY, CancelReason, Draft, DraftInstallment, MarketError, Status as OfferingState,
        Viewer,
    },
    store::{
        self, Confirmed, Distributed, InstallmentRow, InvestIntent, InvestmentRow, OfferingFilter,
        OfferingRow, Reservation,
    },
};

const DEBIT: &str = "/safra.wallet.v1.WalletService/Debit";
const CREDIT: &str = "/safra.wallet.v1.WalletService/Credit";
const PRODUCER: &str = "marketplace";

impl From<MarketError> for Status {
    fn from(error: MarketError) -> Self {
        let message = error.to_string();
        let failed = |reason, metadata: &[(&str, String)]| {
            status::failed_precondition(reason, message.clone(), metadata)
        };
        match error {
            MarketError::Invalid(problems) => status::invalid_argument(
                &problems
                    .into_iter()
                    .map(|problem| Violation {
                        field: problem.field,
                        description: problem.description,
                        reason: "INVALID",
                    })
                    .collect::<Vec<_>>(),
            ),
            MarketError::Currency => status::invalid_argument(&[Violation {
                field: "amount.currency_code".into(),
                description: "must be BRL, the offering's currency".into(),
                reason: "INVALID",
            }]),
            MarketError::OfferingNotFound(id) => status::with_metadata(
                Code::NotFound,
                ErrorReason::OfferingNotFound,
                message,
                &[("offering_id", id.to_string())],
                Vec::new(),
            ),
            MarketError::NotOpen(state) => failed(
                ErrorReason::OfferingNotOpen,
                &[("status", status_name(state).to_owned())],
            ),
            MarketError::ExceedsRemaining { remaining } => failed(
                ErrorReason::AmountExceedsRemaining,
                &[("remaining_minor", remaining.to_string())],
            ),
            MarketError::TransitionNotAllowed(state) => failed(
                ErrorReason::OfferingTransitionNotAllowed,
                &[("status", status_name(state).to_owned())],
            ),
            MarketError::NotProducer => {
                status::permission_denied(ErrorReason::NotOfferingProducer, message)
            }
            MarketError::KeyReused => failed(ErrorReason::IdempotencyKeyReused, &[]),
            MarketError::InsufficientFunds { balance } => match balance {
                Some(balance) => failed(
                    ErrorReason::InsufficientFunds,
                    &[("balance_minor", balance)],
                ),
                None => failed(ErrorReason::InsufficientFunds, &[]),
            },
            MarketError::PageToken => status::invalid_argument(&[Violation {
                field: "page_token".into(),
                description: message,
                reason: "INVALID",
            }]),
            MarketError::Database(error) => error.into(),
            MarketError::Internal(cause) => status::internal(&cause),
        }
    }
}

fn status_name(state: OfferingState) -> &'static str {
    proto_status(state).as_str_name()
}

fn proto_status(state: OfferingState) -> OfferingStatus {
    match state {
        OfferingState::Open => OfferingStatus::Open,
        OfferingState::Funded => OfferingStatus::Funded,
        OfferingState::Settled => OfferingStatus::Settled,
        OfferingState::Cancelled => OfferingStatus::Cancelled,
    }
}

/// How often the background task runs and when a pending investment is
/// considered abandoned by the call that made it.
#[derive(Debug, Clone, Copy)]
pub struct BackgroundSettings {
    /// Time between rounds.
    pub every: Duration,
    /// A pending investment older than this is completed by the task.
    pub pending_after: Duration,
}

impl Default for BackgroundSettings {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(2),
            pending_after: Duration::from_secs(30),
        }
    }
}

/// What one background round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Offerings closed at their deadline.
    pub closed: usize,
    /// Pending investments confirmed or failed.
    pub reconciled: usize,
    /// Producers paid.
    pub paid_out: usize,
    /// Investments refunded.
    pub refunded: usize,
}

/// The marketplace service.
#[derive(Debug, Clone)]
pub struct Marketplace {
    db: Database,
    wallet: WalletServiceClient<MeshChannel>,
    retrier: Arc<Retrier>,
    background: BackgroundSettings,
    /// Rings the background task for work that should not wait for its
    /// next round (a producer to pay).
    background_bell: Arc<tokio::sync::Notify>,
}

/// Work of the service itself gets this much time per wallet call.
const BACKGROUND_CALL: Duration = Duration::from_secs(10);
/// Items a background round takes of each kind.
const ROUND_BATCH: i64 = 100;

impl Marketplace {
    /// The service over `db`, moving money through the wallet at `wallet`.
    #[must_use]
    pub fn new(
        db: Database,
        wallet: MeshChannel,
        retrier: Arc<Retrier>,
        background: BackgroundSettings,
    ) -> Self {
        Self {
            db,
            wallet: WalletServiceClient::new(wallet),
            retrier,
            background,
            background_bell: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The subscribers this service runs on the bus.
    #[must_use]
    pub fn subscribers(&self, retries: Retries) -> Vec<Subscriber> {
        vec![Subscriber::new(
            PRODUCER,
            subscriptions::of(PRODUCER).iter().copied(),
            Arc::new(MarketplaceEvents),
            self.db.clone(),
            retries,
        )]
    }

    /// Runs background rounds until `stop` resolves.
    pub async fn run_background(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.round().await {
                tracing::warn!(%error, "marketplace background round failed");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.background.every) => {}
                () = self.background_bell.notified() => {}
            }
        }
    }

    /// One background round: close expired offerings, complete stale
    /// pending investments, pay producers, refund investors.
    ///
    /// # Errors
    /// The database; a failed wallet call is logged and left for the next
    /// round.
    pub async fn round(&self) -> Result<Round, MarketError> {
        let mut round = Round::default();
        {
            let mut conn = self.db.connection().await?;
            round.closed =
                store::close_expired(&mut conn, Utc::now(), ROUND_BATCH, cancelled_event).await?;
        }
        let stale_before = Utc::now()
            - chrono::Duration::from_std(self.background.pending_after)
                .unwrap_or(chrono::Duration::zero());
        let pending = {
            let mut conn = self.db.connection().await?;
            store::stale_pending(&mut conn, stale_before, ROUND_BATCH).await?
        };
        for investment in pending {
            match self
                .complete(&investment, &CallContext::background(BACKGROUND_CALL))
                .await
            {
                Ok(_) | Err(MarketError::InsufficientFunds { .. }) => round.reconciled += 1,
                Err(error) => {
                    tracing::warn!(investment = %investment.id, %error, "pending investment left for later");
                }
            }
        }
        let payouts = {
            let mut conn = self.db.connection().await?;
            store::payouts_due(&mut conn, ROUND_BATCH).await?
        };
        for offering in payouts {
            match self.pay_out(&offering).await {
                Ok(()) => round.paid_out += 1,
                Err(error) => {
                    tracing::warn!(offering = %offering.id, %error, "payout left for later");
                }
            }
        }
        round.refunded = self.refund_due().await?;
        Ok(round)
    }

    /// Debits the investor for the PENDING `investment` (the key makes a
    /// repeat harmless), then confirms it, or fails it when the wallet
    /// refuses for want of funds. Any other failure leaves it pending.
    async fn complete(
        &self,
        investment: &InvestmentRow,
        context: &CallContext,
    ) -> Result<InvestmentRow, MarketError> {
        let client = self.wallet.clone();
        let debit = self
            .retrier
            .call(
                DEBIT,
                context,
                DebitRequest {
                    owner_id: investment.investor_id.to_string(),
                    amount: Some(brl(investment.amount_minor)),
                    kind: TransactionKind::Investment as i32,
                    offering_id: investment.offering_id.to_string(),
                    reference_id: investment.id.to_string(),
                    idempotency_key: format!("investment:{}", investment.id),
                },
                |request| {
                    let mut client = client.clone();
                    async move { client.debit(request).await }
                },
            )
            .await;
        let transaction = match debit {
            Ok(response) => response
                .into_inner()
                .transaction
                .and_then(|transaction| Uuid::parse_str(&transaction.id).ok())
                .ok_or_else(|| MarketError::Internal("the wallet's debit has no id".into()))?,
            Err(refused) if is_insufficient_funds(&refused) => {
                let mut conn = self.db.connection().await?;
                store::fail(&mut conn, investment.id).await?;
                return Err(MarketError::InsufficientFunds {
                    balance: metadata(&refused, "balance_minor"),
                });
            }
            Err(other) => return Err(MarketError::Internal(format!("wallet debit: {other}"))),
        };
        let (confirmed, funded) = {
            let mut conn = self.db.connection().await?;
            store::confirm(&mut conn, investment, transaction, confirmed_events).await?
        };
        // A funded offering's producer is paid by the background task, woken
        // now: the investor's call does not wait for someone else's payout.
        if funded.is_some() {
            self.background_bell.notify_one();
        }
        Ok(confirmed)
    }

    /// Pays a funded offering's raised amount to its producer, once.
    async fn pay_out(&self, offering: &OfferingRow) -> Result<(), MarketError> {
        let transaction = self
            .credit(
                offering.producer_id,
                offering.raised_minor,
                TransactionKind::FundingPayout,
                offering.id,
                offering.id,
                format!("offering:{}/payout", offering.id),
            )
            .await?;
        let mut conn = self.db.connection().await?;
        store::record_payout(&mut conn, offering.id, transaction).await
    }

    /// Refunds confirmed investments of cancelled offerings; returns how
    /// many.
    async fn refund_due(&self) -> Result<usize, MarketError> {
        let due = {
            let mut conn = self.db.connection().await?;
            store::refunds_due(&mut conn, ROUND_BATCH).await?
        };
        let mut refunded = 0;
        for investment in due {
            let credited = self
                .credit(
                    investment.investor_id,
                    investment.amount_minor,
                    TransactionKind::InvestmentRefund,
                    investment.offering_id,
                    investment.id,
                    format!("investment:{}/refund", investment.id),
                )
                .await;
            match credited {
                Ok(transaction) => {
                    let mut conn = self.db.connection().await?;
                    store::record_refund(&mut conn, investment.id, transaction).await?;
                    refunded += 1;
                }
                Err(error) => {
                    tracing::warn!(investment = %investment.id, %error, "refund left for later");
                }
            }
        }
        Ok(refunded)
    }

    async fn credit(
        &self,
        owner: Uuid,
        amount_minor: i64,
        kind: TransactionKind,
        offering: Uuid,
        reference: Uuid,
        key: String,
    ) -> Result<Uuid, MarketError> {
        let client = self.wallet.clone();
        let response = self
            .retrier
            .call(
                CREDIT,
                &CallContext::background(BACKGROUND_CALL),
                CreditRequest {
                    owner_id: owner.to_string(),
                    amount: Some(brl(amount_minor)),
                    kind: kind as i32,
                    offering_id: offering.to_string(),
                    reference_id: reference.to_string(),
                    idempotency_key: key,
                },
                |request| {
                    let mut client = client.clone();
                    async move { client.credit(request).await }
                },
            )
            .await
            .map_err(|status| MarketError::Internal(format!("wallet credit: {status}")))?;
        response
            .into_inner()
            .transaction
            .and_then(|transaction| Uuid::parse_str(&transaction.id).ok())
            .ok_or_else(|| MarketError::Internal("the wallet's credit has no id".into()))
    }
}

fn is_insufficient_funds(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition
        && status::details(status)
            .error_info
            .is_some_and(|info| info.reason == status::reason_name(ErrorReason::InsufficientFunds))
}

fn metadata(status: &Status, key: &str) -> Option<String> {
    status::details(status)
        .error_info
        .and_then(|info| info.metadata.get(key).cloned())
}

/// InvestmentCreated, and OfferingFunded when the investment filled it.
fn confirmed_events(confirmed: &Confirmed) -> Vec<OutboxEvent> {
    let offering = &confirmed.offering;
    let investment = &confirmed.investment;
    let key = format!("offering:{}", offering.id);
    let mut events = vec![OutboxEvent::new(
        PRODUCER,
        key.clone(),
        &InvestmentCreated {
            investment_id: investment.id.to_string(),
            offering_id: offering.id.to_string(),
            investor_id: investment.investor_id.to_string(),
            producer_id: offering.producer_id.to_string(),
            amount: Some(brl(investment.amount_minor)),
            create_time: Some(timestamp(investment.create_time)),
            raised: Some(brl(offering.raised_minor)),
            offering_funded: confirmed.funded,
        },
    )];
    if confirmed.funded {
        events.push(OutboxEvent::new(
            PRODUCER,
            key,
            &OfferingFunded {
                offering_id: offering.id.to_string(),
                producer_id: offering.producer_id.to_string(),
                raised: Some(brl(offering.raised_minor)),
                investor_ids: confirmed.investors.iter().map(Uuid::to_string).collect(),
                fund_time: Some(timestamp(offering.update_time)),
            },
        ));
    }
    events
}

fn cancelled_event(offering: &OfferingRow, investors: &[Uuid]) -> OutboxEvent {
    let reason = match offering
        .cancel_reason
        .as_deref()
        .and_then(CancelReason::parse)
    {
        Some(CancelReason::Producer) => CancelledReason::CancelledByProducer,
        Some(CancelReason::Deadline) => CancelledReason::FundingDeadlinePassed,
        None => CancelledReason::Unspecified,
    };
    OutboxEvent::new(
        PRODUCER,
        format!("offering:{}", offering.id),
        &OfferingCancelled {
            offering_id: offering.id.to_string(),
            producer_id: offering.producer_id.to_string(),
            reason: reason as i32,
            investor_ids: investors.iter().map(Uuid::to_string).collect(),
            cancel_time: Some(timestamp(offering.update_time)),
        },
    )
}

/// What the marketplace does with the events it follows, in the
/// transaction that records them handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarketplaceEvents;

impl Handler for MarketplaceEvents {
    fn handle<'a>(
        &'a self,
        conn: &'a mut safra::data::db::Connection,
        envelope: &'a Envelope,
        _prepared: &'a Prepared,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            match envelope.r#type.as_str() {
                PaymentConfirmed::TYPE => {
                    let paid: PaymentConfirmed = subscriber::payload(envelope)?;
                    let time = event_time(paid.confirm_time.as_ref(), envelope)?;
                    store::mark_paid(
                        conn,
                        event_uuid(&paid.offering_id)?,
                        paid.installment_number,
                        event_uuid(&paid.payment_id)?,
                        time,
                    )
                    .await?;
                    Ok(())
                }
                DistributionCompleted::TYPE => {
                    let done: DistributionCompleted = subscriber::payload(envelope)?;
                    let time = event_time(done.complete_time.as_ref(), envelope)?;
                    let offering = event_uuid(&done.offering_id)?;
                    let outcome = store::mark_distributed(
                        conn,
                        offering,
                        done.installment_number,
                        event_uuid(&done.payment_id)?,
                        event_uuid(&done.distribution_id)?,
                        time,
                    )
                    .await?;
                    if let Distributed::Settled(row) = outcome {
                        let holders: Vec<String> = store::holders(conn, offering, None, i64::MAX)
                            .await?
                            .into_iter()
                            .map(|(holder, _)| holder.to_string())
                            .collect();
                        tracing::info!(offering = %offering, "offering settled");
                        settled_event(&row, holders, time).write(conn).await?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })
    }

    fn batches(&self) -> bool {
        true
    }
}

fn settled_event(
    offering: &OfferingRow,
    investors: Vec<String>,
    time: chrono::DateTime<Utc>,
) -> OutboxEvent {
    OutboxEvent::new(
        PRODUCER,
        format!("offering:{}", offering.id),
        &OfferingSettled {
            offering_id: offering.id.to_string(),
            producer_id: offering.producer_id.to_string(),
            investor_ids: investors,
            settle_time: Some(timestamp(time)),
        },
    )
}

/// A failed handling is retried, then parked with this text.
impl From<MarketError> for HandlerError {
    fn from(error: MarketError) -> Self {
        HandlerError(error.to_string())
    }
}

fn event_uuid(value: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value).map_err(|_| HandlerError(format!("'{value}' is not a UUID")))
}

fn event_time(
    time: Option<&prost_types::Timestamp>,
    envelope: &Envelope,
) -> Result<chrono::DateTime<Utc>, HandlerError> {
    time.or(envelope.occurred_at.as_ref())
        .and_then(from_timestamp)
        .ok_or_else(|| HandlerError(format!("event {} has no time", envelope.id)))
}

fn brl(minor: i64) -> Money {
    Money {
        currency_code: CURRENCY.to_owned(),
        amount_minor: minor,
    }
}

fn date(value: NaiveDate) -> Date {
    Date {
        year: value.year(),
        month: i32::try_from(value.month()).unwrap_or(0),
        day: i32::try_from(value.day()).unwrap_or(0),
    }
}

/// A `google.type.Date` the validator let through as a real day.
fn naive_date(value: Option<&Date>, field: &str) -> Result<NaiveDate, MarketError> {
    value
        .and_then(|date| {
            NaiveDate::from_ymd_opt(
                date.year,
                u32::try_from(date.month).ok()?,
                u32::try_from(date.day).ok()?,
            )
        })
        .ok_or_else(|| {
            MarketError::Invalid(vec![crate::domain::Problem {
                field: field.to_owned(),
                description: "must be a calendar date".into(),
            }])
        })
}

fn offering_message(row: &OfferingRow, installments: &[InstallmentRow]) -> Offering {
    let money = |minor| Some(brl(minor));
    Offering {
        id: row.id.to_string(),
        producer_id: row.producer_id.to_string(),
        commodity: row.commodity.clone(),
        quantity: row.quantity,
        unit: row.unit.clone(),
        face_value: money(row.face_value_minor),
        annual_rate_bps: row.annual_rate_bps,
        maturity_date: Some(date(row.maturity_date)),
        funding_deadline: Some(timestamp(row.funding_deadline)),
        installments: installments
            .iter()
            .map(|installment| Installment {
                number: installment.number,
                due_date: Some(date(installment.due_date)),
                amount: money(installment.amount_minor),
                paid_time: installment.paid_time.map(timestamp),
                distributed_time: installment.distributed_time.map(timestamp),
            })
            .collect(),
        raised: money(row.raised_minor),
        status: proto_status(row.status()) as i32,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
        remaining: money(row.subscription().remaining()),
        cancel_reason: match row.cancel_reason.as_deref().and_then(CancelReason::parse) {
            Some(CancelReason::Producer) => ProtoCancelReason::CancelledByProducer,
            Some(CancelReason::Deadline) => ProtoCancelReason::FundingDeadlinePassed,
            None => ProtoCancelReason::Unspecified,
        } as i32,
    }
}

fn investment_message(row: &InvestmentRow) -> Investment {
    Investment {
        id: row.id.to_string(),
        offering_id: row.offering_id.to_string(),
        investor_id: row.investor_id.to_string(),
        amount: Some(Money {
            currency_code: row.currency_code.clone(),
            amount_minor: row.amount_minor,
        }),
        status: match row.status.as_str() {
            "pending" => InvestmentStatus::Pending,
            "confirmed" => InvestmentStatus::Confirmed,
            "failed" => InvestmentStatus::Failed,
            "refunded" => InvestmentStatus::Refunded,
            _ => InvestmentStatus::Unspecified,
        } as i32,
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn draft(offering: &Offering) -> Result<Draft, MarketError> {
    let face = offering.face_value.clone().unwrap_or_default();
    let deadline = offering
        .funding_deadline
        .as_ref()
        .and_then(from_timestamp)
        .ok_or_else(|| {
            MarketError::Invalid(vec![crate::domain::Problem {
                field: "offering.funding_deadline".into(),
                description: "must be a valid instant".into(),
            }])
        })?;
    let mut installments = Vec::with_capacity(offering.installments.len());
    for (index, installment) in offering.installments.iter().enumerate() {
        let amount = installment.amount.clone().unwrap_or_default();
        installments.push((
            DraftInstallment {
                number: installment.number,
                due_date: naive_date(
                    installment.due_date.as_ref(),
                    &format!("offering.installments[{index}].due_date"),
                )?,
                amount_minor: amount.amount_minor,
            },
            amount.currency_code,
        ));
    }
    Ok(Draft {
        commodity: offering.commodity.clone(),
        quantity: offering.quantity,
        unit: offering.unit.clone(),
        face_value_currency: face.currency_code,
        face_value_minor: face.amount_minor,
        annual_rate_bps: offering.annual_rate_bps,
        maturity_date: naive_date(offering.maturity_date.as_ref(), "offering.maturity_date")?,
        funding_deadline: deadline,
        installments,
    })
}

fn optional_uuid(value: &str) -> Result<Option<Uuid>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    uuid(value).map(Some)
}

fn uuid(value: &str) -> Result<Uuid, Status> {
    // The contract stage checked the format; a failure here is a bug.
    Uuid::parse_str(value)
        .map_err(|_| status::internal(&"a UUID field passed validation but does not parse"))
}

fn caller<T>(request: &Request<T>) -> Result<(Uuid, String), Status> {
    // The contract stage admits signed-in methods only with a user.
    AuthenticatedUser::of(request)
        .and_then(|user| Some((Uuid::parse_str(&user.user_id).ok()?, user.role.clone())))
        .ok_or_else(|| status::internal(&"a signed-in method ran without a user"))
}

fn holders_token(last: Uuid) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use prost::Message;
    URL_SAFE_NO_PAD.encode(
        PageToken {
            create_time: None,
            id: last.to_string(),
        }
        .encode_to_vec(),
    )
}

fn holders_after(token: &str) -> Result<Option<Uuid>, MarketError> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use prost::Message;
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| MarketError::PageToken)?;
    let token = PageToken::decode(bytes.as_slice()).map_err(|_| MarketError::PageToken)?;
    Uuid::parse_str(&token.id)
        .map(Some)
        .map_err(|_| MarketError::PageToken)
}

#[tonic::async_trait]
impl MarketplaceService for Marketplace {
    async fn create_offering(
        &self,
        request: Request<CreateOfferingRequest>,
    ) -> Result<Response<CreateOfferingResponse>, Status> {
        let (producer, _) = caller(&request)?;
        let offering = request.into_inner().offering.unwrap_or_default();
        let checked = draft(&offering)?
            .check(Utc::now())
            .map_err(MarketError::Invalid)?;
        let mut conn = self.db.connection().await.map_err(MarketError::from)?;
        let (row, installments) = store::insert_offering(&mut conn, producer, &checked).await?;
        Ok(Response::new(CreateOfferingResponse {
            offering: Some(offering_message(&row, &installments)),
        }))
    }

    async fn get_offering(
        &self,
        request: Request<GetOfferingRequest>,
    ) -> Result<Response<Offering>, Status> {
        let id = uuid(&request.get_ref().offering_id)?;
        let mut conn = self.db.connection().await.map_err(MarketError::from)?;
        let (row, installments) = store::offering(&mut conn, id).await?;
        Ok(Response::new(offering_message(&row, &installments)))
    }

    async fn list_offerings(
        &self,
        request: Request<ListOfferingsRequest>,
    ) -> Result<Response<ListOfferingsResponse>, Status> {
        let body = request.into_inner();
        let size = paging::page_size(body.page_size);
        let after = paging::decode(&body.page_token).map_err(|_| MarketError::PageToken)?;
        let filter = OfferingFilter {
            status: match body.status() {
                OfferingStatus::Unspecified => None,
                OfferingStatus::Open => Some(OfferingState::Open),
                OfferingStatus::Funded => Some(OfferingState::Funded),
                OfferingStatus::Settled => Some(OfferingState::Settled),
                OfferingStatus::Cancelled => Some(OfferingState::Cancelled),
            },
            commodity: Some(body.commodity.clone()).filter(|c| !c.is_empty()),
            producer: optional_uuid(&body.producer_id)?,
            min_maturity: body
                .min_maturity_date
                .as_ref()
                .map(|d| naive_date(Some(d), "min_maturity_date"))
                .transpose()?,
            max_maturity: body
                .max_maturity_date
                .as_ref()
                .map(|d| naive_date(Some(d), "max_maturity_date"))
                .transpose()?,
        };
        let mut conn = self.db.connection().await.map_err(MarketError::from)?;
        let mut rows = store::list_offerings(&mut conn, &filter, after, size + 1).await?;
        let next_page_token = paging::next_page(&mut rows, size, |(row, _)| row.keyset());
        Ok(Response::new(ListOfferingsResponse {
            offerings: rows
                .iter()
                .map(|(row, installments)| offering_message(row, installments))
                .collect(),
            next_page_token,
        }))
    }

    async fn cancel_offering(
        &self,
        request: Request<CancelOfferingRequest>,
    ) -> Result<Response<CancelOfferingResponse>, Status> {
        let (me, role) = caller(&request)?;
        let id = uuid(&request.get_ref().offering_id)?;
        let mut conn = self.db.connection().await.map_err(MarketError::from)?;
        let (row, installments) = store::cancel(
            &mut conn,
            id,
            CancelReason::Producer,
            move |offering| {
                if offering.producer_id == me || role == "admin" {
                    Ok(())
                } else {
                    Err(MarketError::NotProducer)
                }
            },
            cancelled_event,
        )
        .await?;
        drop(conn);
        // Refunds start now; the background task finishes what fails here.
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(error) = service.refund_due().await {
                tracing::warn!(%error, "refunds left for the background task");
            }
        });
        Ok(Response::new(CancelOfferingResponse {
            offering: Some(offering_message(&row, &installments)),
        }))
    }

    async fn invest(
        &self,
        request: Request<InvestRequest>,
    ) -> Result<Response<InvestResponse>, Status> {
        let (investor, _) = caller(&request)?;
        let context = CallContext::from_inbound(&request);
        let body = request.into_inner();
        let amount = body.amount.unwrap_or_default();
        if amount.currency_code != CURRENCY {
            return Err(MarketError::Currency.into());
        }
        let intent = InvestIntent {
            investor,
            offering: uuid(&body.offering_id)?,
            amount_minor: amount.amount_minor,
            idempotency_key: body.idempotency_key,
        };
        let reservation = {
            let mut conn = self.db.connection().await.map_err(MarketError::from)?;
            store::reserve(&mut conn, &intent, Utc::now()).await?
        };
        let investment = match reservation {
            Reservation::New(investment) | Reservation::Existing(investment) => investment,
        };
        let investment = match investment.status.as_str() {
            "pending" => match self.complete(&investment, &context).await {
                Ok(done) => done,
                Err(MarketError::Internal(cause)) => {
                    // The debit's outcome is unknown: the investment stays
                    // pending, and a retry with the same key or the
                    // background task completes it.
                    tracing::warn!(investment = %investment.id, %cause, "investment left pending");
                    return Err(status::with_reason(
                        Code::Unavailable,
                        ErrorReason::Unavailable,
                        "the wallet did not confirm the debit; retry with the same idempotency key",
                        Vec::new(),
                    ));
                }
                Err(other) => return Err(other.into()),
            },
            "failed" => return Err(MarketError::InsufficientFunds { balance: None }.into()),
            _ => investment,
        };
        Ok(Response::new(InvestResponse {
            investment: Some(investment_message(&investment)),
        }))
    }

    async fn list_investments(
        &self,
        request: Request<ListInvestmentsRequest>,
    ) -> Result<Response<ListInvestmentsResponse>, Status> {
        let (me, role) = caller(&request)?;
        let body = request.into_inner();
        let viewer = match role.as_str() {
            "admin" => Viewer::Admin,
            "producer" => Viewer::Producer(me),
            _ => Viewer::Investor(me),
        };
        let scope = viewer.scope(
            optional_uuid(&body.investor_id)?,
            optional_uuid(&body.offering_id)?,
        );
        let size = paging::page_size(body.page_size);
        let after = paging::decode(&body.page_token).map_err(|_| MarketError::PageToken)?;
        let mut conn = self.db.connection().await.map_err(MarketError::from)?;
        let mut rows = store::list_investments(&mut conn, scope, after, size + 1).await?;
        let next_page_token = paging::next_page(&mut rows, size, InvestmentRow::keyset);
        Ok(Response::new(ListInvestmentsResponse {
            investments: rows.iter().map(investment_message).collect(),
            next_page_token,
        }))
    }

    async fn list_holders(
        &self,
        request: Request<ListHoldersRequest>,
    ) -> Result<Response<ListHoldersResponse>, Status> {
        let body = request.into_inner();
        let id = uuid(&body.offering_id)?;
        let size = paging::page_size(body.page_size);
        let after = holders_after(&body.page_token)?;
        let mut conn = self.db.connection().await.map_err(MarketError::from)?;
        let (offering, _) = store::offering(&mut conn, id).await?;
        let mut rows = store::holders(
            &mut conn,
            id,
            after,
            i64::try_from(size + 1).unwrap_or(i64::MAX),
        )
        .await
        .map_err(MarketError::from)?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|(holder, _)| holders_token(*holder))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListHoldersResponse {
            holders: rows
                .iter()
                .map(|(holder, amount)| Holder {
                    holder_id: holder.to_string(),
                    amount: Some(brl(*amount)),
                })
                .collect(),
            next_page_token,
            total: Some(brl(offering.raised_minor)),
        }))
    }
}
