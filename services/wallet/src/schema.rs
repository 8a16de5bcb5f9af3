//! Diesel's schema of the wallet database (`safra_wallet`): wallets, the
//! append-only double-entry ledger, installment payments and the event
//! tables. Hand-written and kept in step with `migrations/wallet`.

diesel::table! {
    /// A user's wallet (`owner_id` set) or a system account
    /// (`system_account` set, e.g. `external:deposits`).
    wallets (id) {
        id -> Uuid,
        owner_id -> Nullable<Uuid>,
        system_account -> Nullable<Text>,
        currency_code -> Text,
        /// Maintained by the ledger's trigger for user wallets (never written
        /// by the service; never negative); always 0 for system accounts.
        balance_minor -> Int8,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    /// Append-only; its entries must sum to zero at commit.
    ledger_transactions (id) {
        id -> Uuid,
        /// `deposit`, `investment_debit`, `investment_refund`,
        /// `funding_payout`, `installment_payment` or `distribution_credit`.
        kind -> Text,
        /// The user it was made for; scopes `idempotency_key`.
        owner_id -> Uuid,
        /// Unique per (`owner_id`, `kind`).
        idempotency_key -> Text,
        create_time -> Timestamptz,
        /// Set for every kind but `deposit`.
        offering_id -> Nullable<Uuid>,
        /// The investment, payment, distribution line or offering paid for.
        reference_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    /// Append-only; inserting entries updates user wallets' balances.
    ledger_entries (id) {
        id -> Uuid,
        transaction_id -> Uuid,
        wallet_id -> Uuid,
        /// Positive credits, negative debits; never zero.
        amount_minor -> Int8,
        currency_code -> Text,
        create_time -> Timestamptz,
        /// The wallet's balance after this entry (user wallets only).
        balance_after_minor -> Nullable<Int8>,
    }
}

diesel::table! {
    installment_payments (id) {
        id -> Uuid,
        offering_id -> Uuid,
        installment_number -> Int4,
        payer_id -> Uuid,
        amount_minor -> Int8,
        currency_code -> Text,
        transaction_id -> Uuid,
        idempotency_key -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    /// The transactional outbox; `id` is the event id (Envelope.id).
    outbox (id) {
        id -> Uuid,
        /// Insertion order (GENERATED ALWAYS AS IDENTITY: never insert it).
        seq -> Int8,
        aggregate_key -> Text,
        event_type -> Text,
        /// The encoded `safra.events.v1.Envelope`.
        payload -> Bytea,
        traceparent -> Nullable<Text>,
        create_time -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// The PostgreSQL transport's append-only log (UPDATE is rejected;
    /// appends are serialised so that position order is commit order).
    event_log (position) {
        position -> Int8,
        event_id -> Uuid,
        event_type -> Text,
        aggregate_key -> Text,
        envelope -> Bytea,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    subscriber_cursors (subscriber) {
        subscriber -> Text,
        position -> Int8,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    processed_events (subscriber, event_id) {
        subscriber -> Text,
        event_id -> Uuid,
        processed_time -> Timestamptz,
    }
}

diesel::table! {
    parked_events (id) {
        id -> Uuid,
        subscriber -> Text,
        event_id -> Uuid,
        event_type -> Text,
        envelope -> Bytea,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::joinable!(ledger_entries -> ledger_transactions (transaction_id));
diesel::joinable!(ledger_entries -> wallets (wallet_id));
diesel::joinable!(installment_payments -> ledger_transactions (transaction_id));

diesel::allow_tables_to_appear_in_same_query!(
    wallets,
    ledger_transactions,
    ledger_entries,
    installment_payments,
    outbox,
    event_log,
    subscriber_cursors,
    processed_events,
    parked_events,
);
