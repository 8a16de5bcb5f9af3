-- Notifications shown to a user: written by the event handlers
-- (InvestmentCreated, PaymentConfirmed, DistributionCompleted), listed,
-- marked read and streamed live.

create table notifications (
    id uuid primary key default gen_random_uuid(),
    -- The recipient (a user of the accounts service).
    user_id uuid not null,
    -- What it is about, in lower case, e.g. 'investment_created',
    -- 'payment_confirmed', 'distribution_completed'. A shape rather than a
    -- closed list, so a new kind needs no migration.
    kind text not null
        constraint notifications_kind_shape check (kind ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$'),
    title text not null
        constraint notifications_title_not_empty check (title <> ''),
    body text not null,
    read boolean not null default false,
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now()
);

-- ListNotifications: a user's notifications, newest first (keyset pagination).
create index notifications_user_create_time_idx
    on notifications (user_id, create_time desc, id desc);
-- The unread ones (count, "unread only" filter), kept small as users read.
create index notifications_user_unread_idx
    on notifications (user_id, create_time desc, id desc)
    where not read;

create trigger notifications_set_update_time
    before update on notifications
    for each row execute function set_update_time();

-- StreamNotifications: a stream held open by one replica must hear of a
-- notification stored by another. Every replica LISTENs on
-- safra_notifications; the payload {"id": ..., "user_id": ...} lets it wake
-- only the streams of that user, which then read the row. NOTIFY is sent at
-- commit, so the row is visible by then.
create function notifications_notify() returns trigger
language plpgsql as $$
begin
    perform pg_notify(
        'safra_notifications',
        json_build_object('id', new.id, 'user_id', new.user_id)::text
    );
    return null;
end;
$$;

create trigger notifications_notify
    after insert on notifications
    for each row execute function notifications_notify();
