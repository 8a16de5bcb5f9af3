//! Diesel's schema of the accounts database (`safra_accounts`): users,
//! refresh tokens, login budgets and known addresses, signing keys, the audit log and the event
//! tables. Hand-written and kept in step with `migrations/accounts`.

diesel::table! {
    users (id) {
        id -> Uuid,
        /// Stored normalised (trimmed, lower-case); unique.
        email -> Text,
        password_hash -> Text,
        display_name -> Text,
        /// `investor`, `producer` or `admin`.
        role -> Text,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Uuid,
        family_id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        expires_at -> Timestamptz,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
    }
}

diesel::table! {
    /// Keyed `pair:<email> <address>`, `address:<address>` or `account:<email>`.
    login_budgets (key) {
        key -> Text,
        tokens -> Float8,
        refreshed_at -> Timestamptz,
    }
}

diesel::table! {
    login_known_addresses (email, address) {
        email -> Text,
        address -> Text,
        last_login -> Timestamptz,
    }
}

diesel::table! {
    signing_keys (id) {
        id -> Uuid,
        kid -> Text,
        algorithm -> Text,
        public_key -> Bytea,
        private_key_ciphertext -> Bytea,
        nonce -> Bytea,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        retire_after -> Nullable<Timestamptz>,
        not_after -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Append-only: UPDATE and DELETE are rejected.
    audit_log (id) {
        id -> Uuid,
        actor_id -> Nullable<Uuid>,
        action -> Text,
        subject -> Nullable<Text>,
        detail -> Jsonb,
        trace_id -> Nullable<Text>,
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

diesel::joinable!(refresh_tokens -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    refresh_tokens,
    login_budgets,
    login_known_addresses,
    signing_keys,
    audit_log,
    outbox,
    event_log,
    subscriber_cursors,
    processed_events,
    parked_events,
);
