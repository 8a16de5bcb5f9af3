//! The wallet service's gRPC surface: converts requests into domain
//! movements, records them through the store and converts back. Who may
//! call (users for their own wallet, the marketplace and distribution for
//! Debit and Credit, each for its own kinds) and which fields are valid
//! were settled by the contract stage; what is left are the rules only the
//! data can decide (funds, keys, the offering's schedule).

use std::sync::Arc;

use safra::{
    contract::status::{self, Violation},
    data::db::Database,
    data::outbox::OutboxEvent,
    data::paging::{self, timestamp},
    events::v1::PaymentConfirmed,
    identity::auth::AuthenticatedUser,
    marketplace::v1::{
        GetOfferingRequest, Offering, OfferingStatus as ProtoOfferingStatus,
        marketplace_service_client::MarketplaceServiceClient,
    },
    transport::client::{CallContext, MeshChannel, retry::Retrier},
    r#type::v1::{ErrorReason, Money},
    wallet::v1::{
        CreditRequest, CreditResponse, DebitRequest, DebitResponse, DepositRequest,
        DepositResponse, GetWalletRequest, InstallmentPayment, ListTransactionsRequest,
        ListTransactionsResponse, PayInstallmentRequest, PayInstallmentResponse, Transaction,
        TransactionKind, Wallet, wallet_service_server::WalletService,
    },
};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{
        Amount, CURRENCY, Kind, Movement, OfferingStatus, OfferingTerms, WalletError,
        installment_due,
    },
    store::{self, PaymentRow, TransactionRow, WalletRow},
};

const GET_OFFERING: &str = "/safra.marketplace.v1.MarketplaceService/GetOffering";

impl From<WalletError> for Status {
    fn from(error: WalletError) -> Self {
        let message = error.to_string();
        let failed = |reason, metadata: &[(&str, String)]| {
            status::failed_precondition(reason, message.clone(), metadata)
        };
        match error {
            WalletError::InvalidAmount { field, source } => {
                status::invalid_argument(&[Violation {
                    field: field.to_owned(),
                    description: source.to_string(),
                    reason: "INVALID",
                }])
            }
            WalletError::KindNotAllowed(_) => status::invalid_argument(&[Violation {
                field: "kind".into(),
                description: message,
                reason: "INVALID",
            }]),
            WalletError::Overflow => status::invalid_argument(&[Violation {
                field: "amount.amount_minor".into(),
                description: "the wallet's balance would overflow".into(),
                reason: "OUT_OF_RANGE",
            }]),
            WalletError::InsufficientFunds { balance } => failed(
                ErrorReason::InsufficientFunds,
                &[("balance_minor", balance.to_string())],
            ),
            WalletError::ClearingShort => failed(ErrorReason::InsufficientFunds, &[]),
            WalletError::KeyReused => failed(ErrorReason::IdempotencyKeyReused, &[]),
            WalletError::NotOfferingProducer => {
                status::permission_denied(ErrorReason::ResourceNotOwned, message)
            }
            WalletError::OfferingNotFunded(state) => failed(
                ErrorReason::OfferingNotFunded,
                &[("status", state.name().to_owned())],
            ),
            WalletError::OfferingNotFound(id) => status::with_metadata(
                Code::NotFound,
                ErrorReason::OfferingNotFound,
                message,
                &[("offering_id", id.to_string())],
                Vec::new(),
            ),
            WalletError::InstallmentNotFound(_) => status::with_reason(
                Code::NotFound,
                ErrorReason::InstallmentNotFound,
                message,
                Vec::new(),
            ),
            WalletError::InstallmentAlreadyPaid { payment } => status::with_metadata(
                Code::AlreadyExists,
                ErrorReason::InstallmentAlreadyPaid,
                message,
                &[("payment_id", payment.to_string())],
                Vec::new(),
            ),
            WalletError::PageToken => status::invalid_argument(&[Violation {
                field: "page_token".into(),
                description: message,
                reason: "INVALID",
            }]),
            WalletError::Database(error) => error.into(),
            WalletError::Internal(cause) => status::internal(&cause),
        }
    }
}

/// The wallet service: its database, and the marketplace it asks for an
/// offering's schedule when an installment is paid.
#[derive(Debug, Clone)]
pub struct Wallets {
    db: Database,
    marketplace: MarketplaceServiceClient<MeshChannel>,
    retrier: Arc<Retrier>,
}

impl Wallets {
    /// The service over `db`, calling the marketplace through `marketplace`.
    #[must_use]
    pub fn new(db: Database, marketplace: MeshChannel, retrier: Arc<Retrier>) -> Self {
        Self {
            db,
            marketplace: MarketplaceServiceClient::new(marketplace),
            retrier,
        }
    }

    /// What the marketplace says of `offering`, for the caller.
    async fn offering_terms<T>(
        &self,
        inbound: &Request<T>,
        offering: Uuid,
    ) -> Result<OfferingTerms, Status> {
        let client = self.marketplace.clone();
        let found = self
            .retrier
            .call(
                GET_OFFERING,
                &CallContext::from_inbound(inbound),
                GetOfferingRequest {
                    offering_id: offering.to_string(),
                },
                |request| {
                    let mut client = client.clone();
                    async move { client.get_offering(request).await }
                },
            )
            .await;
        match found {
            Ok(response) => terms(&response.into_inner()).map_err(Status::from),
            Err(status) if status.code() == Code::NotFound => {
                Err(WalletError::OfferingNotFound(offering).into())
            }
            Err(status) => Err(status),
        }
    }
}

fn terms(offering: &Offering) -> Result<OfferingTerms, WalletError> {
    let producer = Uuid::parse_str(&offering.producer_id)
        .map_err(|_| WalletError::Internal("the marketplace sent a bad producer id".into()))?;
    let status = match offering.status() {
        ProtoOfferingStatus::Open => OfferingStatus::Open,
        ProtoOfferingStatus::Funded => OfferingStatus::Funded,
        ProtoOfferingStatus::Settled => OfferingStatus::Settled,
        ProtoOfferingStatus::Cancelled => OfferingStatus::Cancelled,
        ProtoOfferingStatus::Unspecified => OfferingStatus::Unknown,
    };
    let installments = offering
        .installments
        .iter()
        .map(|installment| {
            let amount = installment.amount.clone().unwrap_or_default();
            (
                installment.number,
                amount.currency_code,
                amount.amount_minor,
            )
        })
        .collect();
    Ok(OfferingTerms {
        producer,
        status,
        installments,
    })
}

fn amount(money: Option<&Money>, field: &'static str) -> Result<Amount, WalletError> {
    let money = money.cloned().unwrap_or_default();
    Amount::new(&money.currency_code, money.amount_minor).map_err(|source| {
        WalletError::InvalidAmount {
            field: if matches!(source, crate::domain::AmountError::Currency) {
                currency_field(field)
            } else {
                field
            },
            source,
        }
    })
}

/// `amount.amount_minor` -> `amount.currency_code`.
fn currency_field(field: &'static str) -> &'static str {
    match field {
        "amount.amount_minor" => "amount.currency_code",
        other => other,
    }
}

fn uuid(value: &str, field: &'static str) -> Result<Uuid, Status> {
    // The contract stage checked the format; a failure here is a bug.
    Uuid::parse_str(value)
        .map_err(|_| status::internal(&format!("{field} passed validation but is not a UUID")))
}

fn caller<T>(request: &Request<T>) -> Result<Uuid, Status> {
    // The contract stage admits signed-in methods only with a user.
    AuthenticatedUser::of(request)
        .and_then(|user| Uuid::parse_str(&user.user_id).ok())
        .ok_or_else(|| status::internal(&"a signed-in method ran without a user"))
}

fn proto_kind(kind: &str) -> TransactionKind {
    match Kind::parse(kind) {
        Some(Kind::Deposit) => TransactionKind::Deposit,
        Some(Kind::InvestmentDebit) => TransactionKind::Investment,
        Some(Kind::InvestmentRefund) => TransactionKind::InvestmentRefund,
        Some(Kind::FundingPayout) => TransactionKind::FundingPayout,
        Some(Kind::InstallmentPayment) => TransactionKind::InstallmentPayment,
        Some(Kind::DistributionCredit) => TransactionKind::Distribution,
        None => TransactionKind::Unspecified,
    }
}

fn domain_kind(kind: TransactionKind) -> Option<Kind> {
    match kind {
        TransactionKind::Deposit => Some(Kind::Deposit),
        TransactionKind::Investment => Some(Kind::InvestmentDebit),
        TransactionKind::InvestmentRefund => Some(Kind::InvestmentRefund),
        TransactionKind::FundingPayout => Some(Kind::FundingPayout),
        TransactionKind::InstallmentPayment => Some(Kind::InstallmentPayment),
        TransactionKind::Distribution => Some(Kind::DistributionCredit),
        TransactionKind::Unspecified => None,
    }
}

fn brl(minor: i64) -> Money {
    Money {
        currency_code: CURRENCY.to_owned(),
        amount_minor: minor,
    }
}

fn wallet_message(row: &WalletRow) -> Wallet {
    Wallet {
        id: row.id.to_string(),
        owner_id: row.owner_id.map(|id| id.to_string()).unwrap_or_default(),
        balance: Some(Money {
            currency_code: row.currency_code.clone(),
            amount_minor: row.balance_minor,
        }),
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.update_time)),
    }
}

fn transaction_message(row: &TransactionRow) -> Transaction {
    Transaction {
        id: row.id.to_string(),
        wallet_id: row.wallet_id.to_string(),
        kind: proto_kind(&row.kind) as i32,
        amount: Some(Money {
            currency_code: row.currency_code.clone(),
            amount_minor: row.amount_minor,
        }),
        balance_after: row.balance_after_minor.map(|minor| Money {
            currency_code: row.currency_code.clone(),
            amount_minor: minor,
        }),
        offering_id: row.offering_id.map(|id| id.to_string()).unwrap_or_default(),
        reference_id: row
            .reference_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.create_time)),
    }
}

fn payment_message(row: &PaymentRow) -> InstallmentPayment {
    InstallmentPayment {
        id: row.id.to_string(),
        offering_id: row.offering_id.to_string(),
        installment_number: row.installment_number,
        payer_id: row.payer_id.to_string(),
        amount: Some(Money {
            currency_code: row.currency_code.clone(),
            amount_minor: row.amount_minor,
        }),
        transaction_id: row.transaction_id.to_string(),
        create_time: Some(timestamp(row.create_time)),
        update_time: Some(timestamp(row.create_time)),
    }
}

/// A Debit or Credit request as a movement of `kind` (checked against the
/// kinds the method makes).
fn internal_movement(
    owner: &str,
    money: Option<&Money>,
    kind: TransactionKind,
    allowed: &[Kind],
    offering: &str,
    reference: &str,
    key: String,
) -> Result<Movement, Status> {
    let kind = domain_kind(kind)
        .filter(|kind| allowed.contains(kind))
        .ok_or_else(|| WalletError::KindNotAllowed(kind.as_str_name().to_owned()))?;
    Ok(Movement {
        owner: uuid(owner, "owner_id")?,
        kind,
        amount: amount(money, "amount.amount_minor")?,
        offering: Some(uuid(offering, "offering_id")?),
        reference: Some(uuid(reference, "reference_id")?),
        idempotency_key: key,
    })
}

/// The movement a Debit or Credit request asks for (the two messages carry
/// the same fields), limited to the kinds the method makes.
macro_rules! movement_of {
    ($body:expr, $allowed:expr) => {
        internal_movement(
            &$body.owner_id,
            $body.amount.as_ref(),
            $body.kind(),
            $allowed,
            &$body.offering_id,
            &$body.reference_id,
            $body.idempotency_key,
        )
    };
}

impl Wallets {
    /// Records a movement asked for by another service.
    async fn record_internal(
        &self,
        movement: Result<Movement, Status>,
    ) -> Result<Transaction, Status> {
        let movement = movement?;
        let mut conn = self.db.connection().await.map_err(WalletError::from)?;
        let (_, row) = store::record(&mut conn, &movement).await?;
        Ok(transaction_message(&row))
    }
}

#[tonic::async_trait]
impl WalletService for Wallets {
    async fn get_wallet(
        &self,
        request: Request<GetWalletRequest>,
    ) -> Result<Response<Wallet>, Status> {
        let owner = caller(&request)?;
        let mut conn = self.db.connection().await.map_err(WalletError::from)?;
        let wallet = store::wallet_of(&mut conn, owner).await?;
        Ok(Response::new(wallet_message(&wallet)))
    }

    async fn deposit(
        &self,
        request: Request<DepositRequest>,
    ) -> Result<Response<DepositResponse>, Status> {
        let owner = caller(&request)?;
        let body = request.into_inner();
        let movement = Movement {
            owner,
            kind: Kind::Deposit,
            amount: amount(body.amount.as_ref(), "amount.amount_minor")?,
            offering: None,
            reference: None,
            idempotency_key: body.idempotency_key,
        };
        let mut conn = self.db.connection().await.map_err(WalletError::from)?;
        let (wallet, row) = store::record(&mut conn, &movement).await?;
        Ok(Response::new(DepositResponse {
            wallet: Some(wallet_message(&wallet)),
            transaction: Some(transaction_message(&row)),
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsResponse>, Status> {
        let owner = caller(&request)?;
        let body = request.into_inner();
        let size = paging::page_size(body.page_size);
        let after = paging::decode(&body.page_token).map_err(|_| WalletError::PageToken)?;
        let mut conn = self.db.connection().await.map_err(WalletError::from)?;
        let mut rows =
            store::list_transactions(&mut conn, owner, domain_kind(body.kind()), after, size + 1)
                .await?;
        let next_page_token = paging::next_page(&mut rows, size, TransactionRow::keyset);
        Ok(Response::new(ListTransactionsResponse {
            transactions: rows.iter().map(transaction_message).collect(),
            next_page_token,
        }))
    }

    async fn pay_installment(
        &self,
        request: Request<PayInstallmentRequest>,
    ) -> Result<Response<PayInstallmentResponse>, Status> {
        let payer = caller(&request)?;
        let offering = uuid(&request.get_ref().offering_id, "offering_id")?;
        let number = request.get_ref().installment_number;
        let key = request.get_ref().idempotency_key.clone();
        // A retry returns the first outcome without asking the marketplace.
        {
            let mut conn = self.db.connection().await.map_err(WalletError::from)?;
            if let Some(earlier) = store::payment_by_key(&mut conn, payer, &key).await? {
                if earlier.offering_id != offering || earlier.installment_number != number {
                    return Err(WalletError::KeyReused.into());
                }
                let row = store::transaction(&mut conn, payer, earlier.transaction_id).await?;
                return Ok(Response::new(PayInstallmentResponse {
                    payment: Some(payment_message(&earlier)),
                    transaction: Some(transaction_message(&row)),
                }));
            }
        }
        let terms = self.offering_terms(&request, offering).await?;
        let due = installment_due(&terms, payer, number)?;
        let movement = Movement {
            owner: payer,
            kind: Kind::InstallmentPayment,
            amount: due,
            offering: Some(offering),
            reference: Some(Uuid::new_v4()),
            idempotency_key: key,
        };
        let count = terms.installment_count();
        let mut conn = self.db.connection().await.map_err(WalletError::from)?;
        let (payment, row) = store::pay_installment(&mut conn, number, &movement, |payment| {
            OutboxEvent::new(
                "wallet",
                format!("offering:{offering}"),
                &PaymentConfirmed {
                    payment_id: payment.id.to_string(),
                    offering_id: offering.to_string(),
                    installment_number: number,
                    amount: Some(brl(payment.amount_minor)),
                    producer_id: payer.to_string(),
                    transaction_id: payment.transaction_id.to_string(),
                    confirm_time: Some(timestamp(payment.create_time)),
                    installment_count: count,
                },
            )
        })
        .await?;
        Ok(Response::new(PayInstallmentResponse {
            payment: Some(payment_message(&payment)),
            transaction: Some(transaction_message(&row)),
        }))
    }

    async fn debit(
        &self,
        request: Request<DebitRequest>,
    ) -> Result<Response<DebitResponse>, Status> {
        let body = request.into_inner();
        let transaction = self
            .record_internal(movement_of!(body, &[Kind::InvestmentDebit]))
            .await?;
        Ok(Response::new(DebitResponse {
            transaction: Some(transaction),
        }))
    }

    async fn credit(
        &self,
        request: Request<CreditRequest>,
    ) -> Result<Response<CreditResponse>, Status> {
        let body = request.into_inner();
        let kinds = [
            Kind::DistributionCredit,
            Kind::FundingPayout,
            Kind::InvestmentRefund,
        ];
        let transaction = self.record_internal(movement_of!(body, &kinds)).await?;
        Ok(Response::new(CreditResponse {
            transaction: Some(transaction),
        }))
    }
}
