//! Diesel's schema of the marketplace database (`safra_marketplace`):
//! offerings, their installments, investments and the event tables.
//! Hand-written and kept in step with `migrations/marketplace`.

diesel::table! {
    offerings (id) {
        id -> Uuid,
        producer_id -> Uuid,
        commodity -> Text,
        /// A whole number of `unit`s.
        quantity -> Int8,
        unit -> Text,
        face_value_minor -> Int8,
        currency_code -> Text,
        annual_rate_bps -> Int4,
        maturity_date -> Date,
        funding_deadline -> Timestamptz,
        /// Between 0 and `face_value_minor` (CHECK).
        raised_minor -> Int8,
        /// `open`, `funded`, `settled` or `cancelled`.
        status -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        /// Held by investments whose debit is under way.
        reserved_minor -> Int8,
        /// `producer` or `deadline`; set exactly when cancelled.
        cancel_reason -> Nullable<Text>,
    }
}

diesel::table! {
    offering_installments (offering_id, number) {
        offering_id -> Uuid,
        /// 1, 2, ...
        number -> Int4,
        due_date -> Date,
        amount_minor -> Int8,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        payment_id -> Nullable<Uuid>,
        paid_time -> Nullable<Timestamptz>,
        /// Set from DistributionCompleted.
        distribution_id -> Nullable<Uuid>,
        distributed_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    investments (id) {
        id -> Uuid,
        offering_id -> Uuid,
        investor_id -> Uuid,
        amount_minor -> Int8,
        /// Always the offering's currency (composite foreign key).
        currency_code -> Text,
        /// `pending`, `confirmed`, `failed` or `refunded`.
        status -> Text,
        /// Unique per investor.
        idempotency_key -> Text,
        debit_transaction_id -> Nullable<Uuid>,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        refund_transaction_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    /// A funded offering's payout to its producer, made once.
    payouts (offering_id) {
        offering_id -> Uuid,
        transaction_id -> Uuid,
        create_time -> Timestamptz,
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

diesel::joinable!(offering_installments -> offerings (offering_id));
diesel::joinable!(investments -> offerings (offering_id));
diesel::joinable!(payouts -> offerings (offering_id));

diesel::allow_tables_to_appear_in_same_query!(
    offerings,
    offering_installments,
    investments,
    payouts,
    outbox,
    event_log,
    subscriber_cursors,
    processed_events,
    parked_events,
);
