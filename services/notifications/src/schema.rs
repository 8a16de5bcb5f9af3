//! Diesel's schema of the notifications database (`safra_notifications`):
//! users' notifications and the event tables. Hand-written and kept in step
//! with `migrations/notifications`.

diesel::table! {
    /// Inserting a row sends NOTIFY `safra_notifications` with
    /// `{"id": ..., "user_id": ...}` at commit.
    notifications (id) {
        id -> Uuid,
        user_id -> Uuid,
        /// Lower-case, e.g. `payment_confirmed`.
        kind -> Text,
        title -> Text,
        body -> Text,
        read -> Bool,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        /// The event that caused it; unique with `user_id`.
        event_id -> Nullable<Uuid>,
        offering_id -> Nullable<Uuid>,
        /// Per-user commit order (GENERATED ALWAYS: never insert it).
        seq -> Int8,
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

diesel::allow_tables_to_appear_in_same_query!(
    notifications,
    outbox,
    event_log,
    subscriber_cursors,
    processed_events,
    parked_events,
);
