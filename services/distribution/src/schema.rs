//! Diesel's schema of the distribution database (`safra_distribution`):
//! distributions, their lines and the event tables. Hand-written and kept in
//! step with `migrations/distribution`. The SQL function
//! `allocate_pro_rata(total bigint, holder_ids uuid[], stakes bigint[])
//! returns table(holder_id uuid, amount_minor bigint)` lives in the same
//! database; call it with `diesel::sql_query`.

diesel::table! {
    distributions (id) {
        id -> Uuid,
        offering_id -> Uuid,
        installment_number -> Int4,
        /// Unique: one distribution per installment payment.
        payment_id -> Uuid,
        amount_minor -> Int8,
        currency_code -> Text,
        /// `pending`, `completed` or `failed`.
        status -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        producer_id -> Uuid,
        /// The payment's trace, continued by the credits.
        traceparent -> Nullable<Text>,
        complete_time -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// A distribution's lines sum exactly to its amount (checked at commit).
    distribution_lines (distribution_id, holder_id) {
        distribution_id -> Uuid,
        holder_id -> Uuid,
        stake_minor -> Int8,
        amount_minor -> Int8,
        credited_at -> Nullable<Timestamptz>,
        credit_transaction_id -> Nullable<Uuid>,
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

diesel::joinable!(distribution_lines -> distributions (distribution_id));

diesel::allow_tables_to_appear_in_same_query!(
    distributions,
    distribution_lines,
    outbox,
    event_log,
    subscriber_cursors,
    processed_events,
    parked_events,
);
