-- Event plumbing shared by every Safra service database: the transactional
-- outbox, the PostgreSQL transport's event log, and the subscriber side's
-- bookkeeping (cursors, handled event ids, parked events). Every service
-- database carries the same tables so that one `safra::events` implementation
-- works against any of them. This is the first migration of every database,
-- so it also defines the generic update_time trigger function that later
-- migrations attach to their tables.

-- Keeps update_time truthful without relying on every UPDATE in the store
-- remembering to set it. A statement that sets update_time itself wins (the
-- value differs from the old row), which keeps seeding and tests in control.
create function set_update_time() returns trigger
language plpgsql as $$
begin
    if new.update_time is not distinct from old.update_time then
        new.update_time := now();
    end if;
    return new;
end;
$$;

-- The outbox: an event row commits in the same transaction as the state change
-- it describes, and a relay (running in every replica) publishes it later.
-- `id` is the event id (Envelope.id), so a consumer's de-duplication by event
-- id also covers a relay that publishes a row twice after a crash.
create table outbox (
    id uuid primary key default gen_random_uuid(),
    -- Insertion order. create_time is the transaction's start time, shared by
    -- every event one transaction writes, and ids are random, so neither can
    -- order two events of the same aggregate written together; seq can.
    seq bigint generated always as identity unique,
    -- Events with the same key are published in seq order (e.g. 'offering:<id>').
    aggregate_key text not null check (aggregate_key <> ''),
    event_type text not null check (event_type <> ''),
    -- The encoded safra.events.v1.Envelope, ready to publish as is.
    payload bytea not null,
    -- W3C trace context of the request that caused the event, so the relay's
    -- publish span joins the original trace; null when there was none.
    traceparent text,
    create_time timestamptz not null default now(),
    -- Null until published; the relay claims unpublished rows with
    -- FOR UPDATE SKIP LOCKED so replicas share the work.
    published_at timestamptz
);

-- The relay's claim query scans only the unpublished rows, oldest first.
create index outbox_unpublished_idx on outbox (create_time, seq)
    where published_at is null;
-- Per-aggregate ordering: find the oldest unpublished row of a key.
create index outbox_unpublished_aggregate_idx on outbox (aggregate_key, seq)
    where published_at is null;
-- Pruning of published rows by age.
create index outbox_published_idx on outbox (published_at)
    where published_at is not null;

-- The PostgreSQL transport: an append-only log read by subscribers through a
-- cursor (subscriber_cursors.position).
create table event_log (
    position bigserial primary key,
    event_id uuid not null unique,
    event_type text not null check (event_type <> ''),
    aggregate_key text not null check (aggregate_key <> ''),
    -- The encoded safra.events.v1.Envelope.
    envelope bytea not null,
    create_time timestamptz not null default now()
);

-- A cursor reader must never see position N+1 committed before N, or it moves
-- past N and loses that event for good. Sequence values are handed out before
-- commit, so two concurrent appends could commit out of order. Serialising the
-- appends of a database with a transaction-scoped advisory lock, taken by a
-- statement-level BEFORE trigger (which runs before the rows' defaults, and
-- so before nextval), makes position order equal commit order. The lock is
-- held until the appending transaction ends: append in short transactions.
create function event_log_serialize_appends() returns trigger
language plpgsql as $$
begin
    -- The key is a fixed 64-bit hash of a name no other lock uses.
    perform pg_advisory_xact_lock(hashtextextended('safra.event_log.append', 0));
    return null;
end;
$$;

create trigger event_log_serialize_appends
    before insert on event_log
    for each statement execute function event_log_serialize_appends();

-- Wake sleeping subscribers (LISTEN safra_events) in every replica; NOTIFY is
-- delivered at commit, so a woken reader finds the row. The payload is the new
-- position, a hint only: readers always query from their cursor.
create function event_log_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify('safra_events', new.position::text);
    return null;
end;
$$;

create trigger event_log_notify
    after insert on event_log
    for each row execute function event_log_notify();

-- A published event never changes. DELETE stays possible so that old entries,
-- below every subscriber's cursor, can be pruned.
create function event_log_reject_update() returns trigger
language plpgsql as $$
begin
    raise exception 'event_log is append-only: UPDATE is not allowed'
        using errcode = 'restrict_violation';
end;
$$;

create trigger event_log_reject_update
    before update on event_log
    for each row execute function event_log_reject_update();

-- One cursor per subscriber (a competing-consumer group): the position of the
-- last event_log entry it handled. Replicas claim the batch after it by
-- locking this row (FOR UPDATE SKIP LOCKED).
create table subscriber_cursors (
    subscriber text primary key check (subscriber <> ''),
    position bigint not null default 0 check (position >= 0),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now()
);

create trigger subscriber_cursors_set_update_time
    before update on subscriber_cursors
    for each row execute function set_update_time();

-- Handled event ids, written in the same transaction as the handler's effect,
-- so a redelivered event (either transport) is recognised and skipped.
create table processed_events (
    subscriber text not null,
    event_id uuid not null,
    processed_time timestamptz not null default now(),
    primary key (subscriber, event_id)
);

-- Pruning by age.
create index processed_events_processed_time_idx on processed_events (processed_time);

-- Events whose handling failed after every retry, kept for the jobs monitor,
-- where an admin retries (re-delivers) or discards them (deletes the row).
create table parked_events (
    id uuid primary key default gen_random_uuid(),
    subscriber text not null check (subscriber <> ''),
    event_id uuid not null,
    event_type text not null,
    envelope bytea not null,
    attempts integer not null default 0 check (attempts >= 0),
    last_error text,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    -- An event is parked at most once per subscriber; parking it again after a
    -- failed retry updates the row (ON CONFLICT (subscriber, event_id)).
    unique (subscriber, event_id)
);

-- The jobs monitor lists parked events, newest first, overall and per subscriber.
create index parked_events_create_time_idx on parked_events (create_time desc, id desc);
create index parked_events_subscriber_create_time_idx
    on parked_events (subscriber, create_time desc, id desc);

create trigger parked_events_set_update_time
    before update on parked_events
    for each row execute function set_update_time();
