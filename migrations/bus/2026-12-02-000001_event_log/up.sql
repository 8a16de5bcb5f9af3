-- The PostgreSQL transport's own database (`safra_events`), shared by the
-- services the way a broker is: the append-only event log every relay
-- appends to and every subscriber reads through its cursor. Services keep
-- their outbox, handled event ids and parked events in their own
-- databases; this one holds only what is in transit.

create function set_update_time() returns trigger
language plpgsql as $$
begin
    if new.update_time is not distinct from old.update_time then
        new.update_time := now();
    end if;
    return new;
end;
$$;

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

